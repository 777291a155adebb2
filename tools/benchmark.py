#!/usr/bin/env python
# Copyright (c) mmvit3 authors. All rights reserved.
"""Speed and peak memory of ViT3 backbones against MMDetection's Swin-T,
ResNet-50 and a global-attention ViT-S, over input sizes, for the backbone
alone and for the whole Mask R-CNN detector, in inference and in a training
step (forward + backward), on CPU or CUDA.

Every measurement runs in a process of its own, so that peak memory is that
model's alone: peak RSS on CPU (``VmHWM``), ``torch.cuda.max_memory_allocated``
on CUDA. The results are written as they come (``results.jsonl``), then as a
markdown table (``benchmark.md``, with the machine it ran on) and a log-log
plot of time and memory against pixels with linear and quadratic slopes
(``benchmark.png``). A ``goals`` section compares ViT3-T with Swin-T and with
the plain implementation, and the two detection sizes with each other;
another compares plain ViT3-T/S with DeiT-T/S (global attention, through
SDPA and written out) beside the papers' high-resolution claims.
With ``--breakdown`` each part of a backbone (stem, each stage's blocks,
each down-sampling, the output norms) is also timed on its own, fed what it
gets in the model, and the report says where the time goes; on CPU a few more
steps run under ``torch.profiler`` and their operators' time is split into
matrix products (with their multiply-adds), convolutions and the rest.

Examples::

    python tools/benchmark.py                                # default grid
    python tools/benchmark.py --models vit3-t swin-t --sizes 800x1344 \\
        --modes infer train --levels backbone
    python tools/benchmark.py --device cuda --amp            # bf16 autocast
    python tools/benchmark.py --models vit3-t swin-t --sizes 800x1344 \\
        --breakdown                                          # per part
    python tools/benchmark.py --replot work_dirs/benchmark   # redraw only
    python tools/benchmark.py --models plain-vit3-t deit-t deit-t-naive \\
        plain-vit3-s deit-s deit-s-naive --sizes 224 512 768 1024 1248 1280
                                          # plain ViT3 against DeiT (papers' claim)

Sizes are ``H``x``W`` (or one number for a square); batch 1 unless
``--batch``. A measurement that runs out of memory or time is reported as
such, not dropped.
"""
import argparse
import json
import math
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# run as a script: make the repository importable without installing it
sys.path.insert(0, ROOT)

#: name -> (registry scope, backbone config, output widths for the FPN)
BACKBONES: Dict[str, tuple] = {
    'vit3-t': ('mmdet', dict(type='ViT3', arch='tiny'), [64, 128, 320, 512]),
    'vit3-s': ('mmdet', dict(type='ViT3', arch='small'), [64, 128, 320, 512]),
    'vit3-b': ('mmdet', dict(type='ViT3', arch='base'), [96, 192, 448, 640]),
    'vit3-t-plain': ('mmdet', dict(type='ViT3', arch='tiny', impl='plain'),
                     [64, 128, 320, 512]),
    'swin-t': ('mmdet', dict(type='SwinTransformer'), [96, 192, 384, 768]),
    'r50': ('mmdet', dict(type='ResNet', depth=50), [256, 512, 1024, 2048]),
    'vit-s': (None, None, None),  # GlobalViT below: single-scale, no detector
    # plain (stride-16, single-scale) models: backbone level only
    'plain-vit3-t': ('mmdet', dict(type='PlainViT3', arch='tiny'), None),
    'plain-vit3-s': ('mmdet', dict(type='PlainViT3', arch='small'), None),
    'deit-t': (None, dict(embed_dims=192, num_heads=3, naive=False), None),
    'deit-s': (None, dict(embed_dims=384, num_heads=6, naive=False), None),
    'deit-t-naive': (None, dict(embed_dims=192, num_heads=3, naive=True), None),
    'deit-s-naive': (None, dict(embed_dims=384, num_heads=6, naive=True), None),
}
SINGLE_SCALE = ('vit-s', 'plain-vit3-t', 'plain-vit3-s', 'deit-t', 'deit-s',
                'deit-t-naive', 'deit-s-naive')
LABELS = {
    'vit3-t': 'H-ViT3-T', 'vit3-s': 'H-ViT3-S', 'vit3-b': 'H-ViT3-B',
    'vit3-t-plain': 'H-ViT3-T (plain path)', 'swin-t': 'Swin-T',
    'r50': 'ResNet-50', 'vit-s': 'ViT-S/16 (global attention)',
    'plain-vit3-t': 'plain ViT3-T', 'plain-vit3-s': 'plain ViT3-S',
    'deit-t': 'DeiT-T (SDPA)', 'deit-s': 'DeiT-S (SDPA)',
    'deit-t-naive': 'DeiT-T (written-out attention)',
    'deit-s-naive': 'DeiT-S (written-out attention)',
}
#: the papers' plain-model comparison: sizes, and the ratios they report
#: (plain ViT3-T against DeiT-T: speed-up and memory share)
PAPER_SIZES = {(1248, 1248): 'ViT3 paper: 4.6x faster, 9.7% of the memory',
               (1280, 1280): 'Vision-TTT paper (its own TTT-T): 4.72x faster, '
                             '88.9% less memory'}
DET_BASE = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
DEFAULT_MODELS = ['vit3-t', 'vit3-s', 'vit3-b', 'vit3-t-plain', 'swin-t',
                  'r50', 'vit-s']
DEFAULT_SIZES = ['512', '800x1344', '1024', '1600x2688', '2048']
#: the issue's reference sizes (detection inputs, 1x and 4x the pixels)
REF_SIZE, BIG_SIZE = (800, 1344), (1600, 2688)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def global_vit(embed_dims: int = 384, depth: int = 12, num_heads: int = 6):
    """ViT-S/16 with global attention (torch's ``TransformerEncoderLayer``,
    scaled-dot-product attention): patch embedding, a learned 32x32 position
    table resized to the input grid, pre-norm blocks; returns the stride-16
    feature map. 22.0M parameters, against 28.2M for H-ViT3-T."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class GlobalViT(nn.Module):

        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, embed_dims, 16, 16)
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_dims, 32, 32))
            layer = nn.TransformerEncoderLayer(
                embed_dims, num_heads, 4 * embed_dims, dropout=0.,
                activation='gelu', batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth,
                                                enable_nested_tensor=False)
            self.norm = nn.LayerNorm(embed_dims)

        def forward(self, x):
            x = self.patch_embed(x)  # (B, C, H/16, W/16)
            b, c, h, w = x.shape
            pos = F.interpolate(self.pos_embed, size=(h, w), mode='bilinear',
                                align_corners=False)
            x = (x + pos).flatten(2).transpose(1, 2)  # (B, N, C)
            x = self.norm(self.blocks(x))
            return (x.transpose(1, 2).reshape(b, c, h, w), )  # (B, C, h, w)

    return GlobalViT()


def deit(embed_dims: int, num_heads: int, naive: bool, depth: int = 12):
    """DeiT/16 (patch 16, class token, learned 14x14 position table resized
    to the input grid, pre-norm blocks of global multi-head attention and a
    4x MLP, LayerNorm eps 1e-6), at DeiT-T (192, 3 heads) or DeiT-S (384, 6)
    width; attention through torch's ``scaled_dot_product_attention`` or, with
    ``naive``, written out (``softmax(q k^T / sqrt(d)) v``, the N x N matrix
    held). Returns the stride-16 map of the patch tokens."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):

        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
            self.qkv = nn.Linear(embed_dims, 3 * embed_dims)
            self.proj = nn.Linear(embed_dims, embed_dims)
            self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(embed_dims, 4 * embed_dims), nn.GELU(),
                                     nn.Linear(4 * embed_dims, embed_dims))

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
            if naive:
                attn = (q @ k.transpose(-2, -1)) * q.shape[-1]**-0.5  # (B, H, N, N)
                out = attn.softmax(dim=-1) @ v
            else:
                out = F.scaled_dot_product_attention(q, k, v)
            x = x + self.proj(out.transpose(1, 2).reshape(b, n, c))
            return x + self.mlp(self.norm2(x))

    class DeiT(nn.Module):

        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, embed_dims, 16, 16)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_dims, 14, 14))
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.norm = nn.LayerNorm(embed_dims, eps=1e-6)

        def forward(self, x):
            x = self.patch_embed(x)  # (B, C, H/16, W/16)
            b, c, h, w = x.shape
            pos = F.interpolate(self.pos_embed, size=(h, w), mode='bicubic',
                                align_corners=False)
            x = torch.cat([self.cls_token.expand(b, -1, -1),
                           (x + pos).flatten(2).transpose(1, 2)], dim=1)  # (B, 1 + N, C)
            for block in self.blocks:
                x = block(x)
            x = self.norm(x)[:, 1:]
            return (x.transpose(1, 2).reshape(b, c, h, w), )  # (B, C, h, w)

    return DeiT()


def build(name: str, level: str):
    """The backbone, or the Mask R-CNN detector with that backbone."""
    scope, backbone, widths = BACKBONES[name]
    if name in SINGLE_SCALE and level != 'backbone':
        raise ValueError(f'{name} is single-scale: backbone level only')
    if name == 'vit-s':
        return global_vit()
    if name.startswith('deit'):
        return deit(**backbone)
    import mmvit3  # noqa: F401  (registers ViT3)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    if level == 'backbone':
        return MODELS.build(backbone)
    from mmengine.config import Config
    cfg = Config.fromstring(f"_base_ = '{DET_BASE}'\n", file_format='.py')
    cfg.model.backbone = dict(backbone)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.neck.in_channels = widths
    return MODELS.build(cfg.model)


def det_samples(batch: int, h: int, w: int, train: bool, device):
    """Data samples for a detector: image metas, and three boxes with masks
    per image for a training step."""
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    samples = []
    for _ in range(batch):
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    batch_input_shape=(h, w), scale_factor=(1., 1.))
        sample = DetDataSample(metainfo=meta)
        if train:
            boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.3, 0.2, 0.9, 0.6],
                                  [0.5, 0.5, 0.8, 0.95]]) * torch.tensor(
                                      [w, h, w, h])
            masks = torch.zeros(3, h, w, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            sample.gt_instances = InstanceData(
                bboxes=boxes.to(device), labels=torch.tensor([0, 1, 2],
                                                             device=device),
                masks=BitmapMasks(masks.numpy(), h, w))
        samples.append(sample)
    return samples


# ---------------------------------------------------------------------------
# Where the time goes (--breakdown)
# ---------------------------------------------------------------------------
#: the groups a backbone's parts are timed in, in the order they run
PART_GROUPS = ('stem', 'stage 1', 'down 1', 'stage 2', 'down 2', 'stage 3',
               'down 3', 'stage 4', 'out norms')


def backbone_parts(name: str, model) -> List[tuple]:
    """A backbone's parts as ``(group, module to run, module whose input it
    gets)``, covering every parameter once: the stem, each block of stage
    ``i`` ('stage i'), the down-sampling after it ('down i') and the output
    norms. What runs between them (reshapes, dropout, ViT-S's position
    table) is not a part."""
    import torch.nn as nn
    if name.startswith('vit3') or name == 'swin-t':
        stem = (model.patch_embed, model.patch_embed)
        stages = [(s.blocks, s.downsample) for s in
                  (model.layers if name.startswith('vit3') else model.stages)]
        norms = [getattr(model, f'norm{i}') for i in model.out_indices]
    elif name == 'r50':  # its stem is four modules; it gets conv1's input
        stem = (nn.Sequential(model.conv1, model.norm1, model.relu, model.maxpool),
                model.conv1)
        stages = [([getattr(model, layer)], None) for layer in model.res_layers]
        norms = []
    elif name == 'vit-s':
        stem = (model.patch_embed, model.patch_embed)
        stages = [(model.blocks.layers, None)]
        norms = [model.norm]
    elif name.startswith('plain-vit3'):
        stem = (model.patch_embed, model.patch_embed)
        stages = [(model.blocks, None)]
        norms = [getattr(model, model.out_norm_name(i)) for i in model.out_indices]
    else:
        raise ValueError(f'no breakdown for {name!r}')
    parts = [('stem', ) + stem]
    for i, (blocks, down) in enumerate(stages, 1):
        parts += [(f'stage {i}', m, m) for m in blocks]
        if down is not None:
            parts.append((f'down {i}', down, down))
    return parts + [('out norms', m, m) for m in norms]


def _tensors(out) -> list:
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def time_parts(name: str, model, step, train: bool, amp, runs: int,
               sync) -> Dict[str, float]:
    """Seconds per part group: ``step()`` runs the whole model once to
    record what each part gets; then each part runs on its own on that
    input (forward, and backward from the sum of its outputs when
    ``train``), ``runs`` times after one warm-up; the median counts."""
    import torch
    parts = backbone_parts(name, model)
    inputs: Dict[int, tuple] = {}

    def record(module, args, kwargs):
        inputs[id(module)] = tuple(
            a.detach().clone() if isinstance(a, torch.Tensor) else a
            for a in args), kwargs

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True)
             for _, _, m in parts]
    try:
        step()
    finally:
        for hook in hooks:
            hook.remove()
    groups: Dict[str, float] = {}
    for index, (group, module, source) in enumerate(parts):
        args, kwargs = inputs[id(source)]

        def run():
            # the image needs no gradient; every later input does in training
            ins = [a.detach().requires_grad_(train and index > 0 and a.is_floating_point())
                   if isinstance(a, torch.Tensor) else a for a in args]
            with torch.set_grad_enabled(train), amp:
                out = _tensors(module(*ins, **kwargs))
            if train:
                sum(t.float().sum() for t in out).backward()
                model.zero_grad(set_to_none=True)
            sync()

        times = []
        for i in range(runs + 1):
            start = time.perf_counter()
            run()
            if i:
                times.append(time.perf_counter() - start)
        groups[group] = groups.get(group, 0.) + statistics.median(times)
    return groups


#: profiler operators that are matrix-product kernels, and the argument
#: positions of their two factors (for counting multiply-adds)
MATMUL_OPS = {'aten::mm': (0, 1), 'aten::addmm': (1, 2), 'aten::bmm': (0, 1),
              'aten::baddbmm': (1, 2), 'aten::_addmm_activation': (1, 2)}
#: profiler operators that are convolution kernels (forward or backward)
CONV_OPS = frozenset({
    'aten::mkldnn_convolution', 'aten::convolution_backward',
    'aten::_slow_conv2d_forward', 'aten::_slow_conv2d_backward',
    'aten::slow_conv_dilated2d', 'aten::_nnpack_spatial_convolution',
    'mkldnn::_convolution_pointwise'})
#: the classes of :func:`op_split`, in report order
OP_CLASSES = ('matrix products', 'convolutions', 'other')


def _matmul_macs(name: str, shapes) -> Optional[int]:
    """Multiply-adds of one call of a matrix-product operator from its input
    shapes (``(.., m, k) @ (.., k, n)``), None where the shapes are not
    recorded."""
    try:
        a, b = (shapes[i] for i in MATMUL_OPS[name])
        batch = math.prod(a[:-2])
        return batch * a[-2] * a[-1] * b[-1]
    except (IndexError, TypeError, ValueError):
        return None


def op_split(events) -> Dict[str, float]:
    """Sort a profiled step's operators by what they compute.

    Args:
        events: ``(name, self seconds, calls, input shapes)`` per operator
            and input shapes, e.g. from ``key_averages(group_by_input_shape=True)``.

    Returns:
        dict: seconds of self time of :data:`OP_CLASSES`, ``'profiled'``
        (all of them) and ``'gmac'``, the matrix products' multiply-adds in G
        (calls whose shapes were not recorded count none).
    """
    split = dict.fromkeys(OP_CLASSES, 0.)
    macs = 0
    for name, seconds, calls, shapes in events:
        if name in MATMUL_OPS:
            split['matrix products'] += seconds
            macs += calls * (_matmul_macs(name, shapes) or 0)
        elif name in CONV_OPS:
            split['convolutions'] += seconds
        else:
            split['other'] += seconds
    split['profiled'] = sum(split[k] for k in OP_CLASSES)
    split['gmac'] = macs / 1e9
    return split


def profile_ops(step, runs: int) -> Dict[str, float]:
    """:func:`op_split` per ``step()``, averaged over ``runs`` steps under
    ``torch.profiler`` after one unprofiled step (CPU time; the profiler's
    bookkeeping makes a step slower than a timed one)."""
    from torch.profiler import ProfilerActivity, profile
    step()  # settle the heap after the parts ran alone
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(runs):
            step()
    split = op_split((e.key, e.self_cpu_time_total / 1e6, e.count, e.input_shapes)
                     for e in prof.key_averages(group_by_input_shape=True))
    return {k: v / runs for k, v in split.items()}


# ---------------------------------------------------------------------------
# One measurement (child process)
# ---------------------------------------------------------------------------
def _status_gib(field: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    return float('nan')


def measure(job: dict) -> dict:
    """Time and peak memory of one (model, level, mode, size) in this
    process."""
    import torch
    if job.get('threads'):
        torch.set_num_threads(job['threads'])
    device = torch.device(job['device'])
    h, w = job['size']
    train = job['mode'] == 'train'
    torch.manual_seed(0)
    model = build(job['model'], job['level']).to(device)
    model.train(train)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(job['batch'], 3, h, w, device=device)
    samples = (det_samples(job['batch'], h, w, train, device)
               if job['level'] == 'detector' else None)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16)
           if job['amp'] else torch.autocast(device.type, enabled=False))

    def step():
        with torch.set_grad_enabled(train), amp:
            if samples is None:
                out = model(x)
                loss = sum(o.float().mean() for o in out)
            elif train:
                losses = model(x, samples, mode='loss')
                loss = sum(v.sum() for k, v in losses.items() if 'loss' in k
                           for v in (v if isinstance(v, list) else [v]))
            else:
                model(x, samples, mode='predict')
                loss = None
        if train:
            loss.backward()
            model.zero_grad(set_to_none=True)
        sync()

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    cuda = device.type == 'cuda'
    base = (torch.cuda.memory_allocated() / 2**30 if cuda else
            _status_gib('VmRSS'))
    times: List[float] = []
    budget_end = time.perf_counter() + job['max_time']
    for i in range(job['warmup'] + job['repeat']):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        step()
        if i >= job['warmup']:
            times.append(time.perf_counter() - start)
        if times and time.perf_counter() > budget_end:
            break
    peak = (torch.cuda.max_memory_allocated() / 2**30 if cuda else
            _status_gib('VmHWM'))
    sec = statistics.median(times)
    result = dict(params=params, seconds=sec, runs=len(times),
                  images_per_s=job['batch'] / sec, peak_gib=peak,
                  base_gib=base, step_gib=peak - base)
    if job.get('breakdown') and samples is None:
        result['parts'] = time_parts(job['model'], model, step, train, amp,
                                     job['repeat'], sync)
        if not cuda:  # on CUDA the CPU self time is launch time, not the kernels'
            result['ops'] = profile_ops(step, job['repeat'])
    return result


def child_main(job_json: str) -> int:
    job = json.loads(job_json)
    if job['device'] == 'cpu':
        from mmvit3.utils.malloc import keep_freed_memory
        keep_freed_memory()  # as tools/train.py and test.py do on CPU
        if job.get('mem_limit_gib'):
            # fail an allocation (reported as out of memory) before the
            # system runs out
            limit = int(job['mem_limit_gib'] * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = measure(job)
    except (RuntimeError, MemoryError) as err:
        text = str(err)
        oom = isinstance(err, MemoryError) or 'memory' in text.lower()
        result = dict(error='out of memory' if oom else text.splitlines()[0])
    print('RESULT ' + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------
# The parent: plan, run, write
# ---------------------------------------------------------------------------
def parse_size(text: str) -> tuple:
    parts = text.lower().split('x')
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f'size must be H, HxW or H W with positive integers, got {text!r}')
    return int(parts[0]), int(parts[1])


def machine_info(device: str, threads: Optional[int]) -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(date=time.strftime('%Y-%m-%d %H:%M'), cpu=cpu,
                cores=os.cpu_count(),
                threads=threads or torch.get_num_threads(),
                memory_gib=round(os.sysconf('SC_PAGE_SIZE') *
                                 os.sysconf('SC_PHYS_PAGES') / 2**30, 1),
                torch=torch.__version__, python=platform.python_version(),
                device=device)
    if device == 'cuda' and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    elif device == 'cpu':  # what each measurement's process does
        from mmvit3.utils.malloc import ENV_VAR, malloc_setting, malloc_tunable
        if malloc_tunable():
            setting = malloc_setting()
            info['malloc'] = (
                'glibc malloc keeping freed memory' if setting == 'keep' else
                'glibc malloc as it is') + f' ({ENV_VAR}={setting})'
    return info


def plan(args) -> List[dict]:
    jobs = []
    for level in args.levels:
        for model in args.models:
            if model in SINGLE_SCALE and level != 'backbone':
                continue
            for mode in args.modes:
                for size in args.sizes:
                    jobs.append(dict(
                        model=model, level=level, mode=mode, size=size,
                        batch=args.batch, device=args.device, amp=args.amp,
                        threads=args.threads, warmup=args.warmup,
                        repeat=args.repeat, max_time=args.max_time,
                        mem_limit_gib=args.mem_limit,
                        breakdown=args.breakdown and level == 'backbone'))
    return jobs


def run_job(job: dict, timeout: float) -> dict:
    cmd = [sys.executable, osp.abspath(__file__), '--child', json.dumps(job)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(job, error=f'over {timeout:.0f} s')
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith('RESULT '):
            return dict(job, **json.loads(line[len('RESULT '):]))
    if proc.returncode < 0:  # killed by a signal, e.g. the OOM killer
        return dict(job, error=f'killed (signal {-proc.returncode})')
    tail = proc.stdout.strip().splitlines()[-1:] or ['no output']
    return dict(job, error=f'exit {proc.returncode}: {tail[0][:200]}')


def _key(r: dict) -> tuple:
    return r['level'], r['model'], r['mode'], tuple(r['size'])


def find(results: Sequence[dict], model, level, mode, size) -> Optional[dict]:
    for r in results:
        if _key(r) == (level, model, mode, tuple(size)) and 'error' not in r:
            return r
    return None


def goals(results: Sequence[dict]) -> List[str]:
    """The issue's targets, where the results hold what they need."""
    lines = []

    def ratio(text, num, den, field, limit, below=True):
        if num is None or den is None:
            return
        value = num[field] / den[field]
        ok = value <= limit if below else value >= limit
        lines.append(f'| {text} | {value:.2f} | {"≤" if below else "≥"} '
                     f'{limit} | {"met" if ok else "NOT met"} |')

    for level in ('backbone', 'detector'):
        get = lambda m, mode, s=REF_SIZE: find(results, m, level, mode, s)  # noqa
        fast_i, fast_t = get('vit3-t', 'infer'), get('vit3-t', 'train')
        ratio(f'{level}: ViT3-T / Swin-T, inference time', fast_i,
              get('swin-t', 'infer'), 'seconds', 1.0)
        ratio(f'{level}: ViT3-T / Swin-T, training-step time', fast_t,
              get('swin-t', 'train'), 'seconds', 1.0)
        ratio(f'{level}: ViT3-T / Swin-T, training-step peak memory', fast_t,
              get('swin-t', 'train'), 'peak_gib', 1.0)
        ratio(f'{level}: plain / fast path, inference time',
              get('vit3-t-plain', 'infer'), fast_i, 'seconds', 1.3, False)
        ratio(f'{level}: plain / fast path, training-step time',
              get('vit3-t-plain', 'train'), fast_t, 'seconds', 1.3, False)
        for mode in ('infer', 'train'):
            big = get('vit3-t', mode, BIG_SIZE)
            ref = get('vit3-t', mode, REF_SIZE)
            ratio(f'{level}: ViT3-T {mode}, time 1600x2688 / 800x1344', big,
                  ref, 'seconds', 4.3)
            ratio(f'{level}: ViT3-T {mode}, peak memory 1600x2688 / 800x1344',
                  big, ref, 'peak_gib', 4.3)
    if lines:
        lines = ['| goal | ratio | target | |', '| --- | --- | --- | --- |'
                 ] + lines
    return lines


def plain_comparison(results: Sequence[dict]) -> List[str]:
    """Plain ViT3 against DeiT at the papers' sizes: DeiT's time over plain
    ViT3's (speed-up) and plain ViT3's step memory (what the step added to
    the process) over DeiT's, beside what the papers report."""
    lines = []
    for size in sorted({tuple(r['size']) for r in results}):
        for v in ('t', 's'):
            for mode in ('infer', 'train'):
                ours = find(results, f'plain-vit3-{v}', 'backbone', mode, size)
                for ref in (f'deit-{v}', f'deit-{v}-naive'):
                    other = find(results, ref, 'backbone', mode, size)
                    if ours is None or other is None:
                        continue
                    paper = PAPER_SIZES.get(size, '')
                    if paper and v == 's':
                        paper = 'none (the papers compare T only)'
                    lines.append(
                        f"| {size[0]}x{size[1]} | {LABELS[f'plain-vit3-{v}']} vs "
                        f"{LABELS[ref]} | {mode} | {other['seconds'] / ours['seconds']:.2f}x | "
                        f"{100 * ours['step_gib'] / max(other['step_gib'], 1e-9):.1f}% | "
                        f'{paper} |')
    if lines:
        lines = ['| input | models | mode | speed-up | step memory share | papers |',
                 '| --- | --- | --- | --- | --- | --- |'] + lines
    return lines


def markdown(results: Sequence[dict], machine: dict) -> str:
    hw = f"{machine['cpu']}, {machine['cores']} cores, " \
         f"{machine['threads']} torch threads, {machine['memory_gib']} GiB"
    if machine.get('gpu'):
        hw = f"{machine['gpu']} ({hw})"
    amp = ' under bf16 autocast' if results and results[0].get('amp') else ''
    rounds = sorted({r.get('rounds', 1) for r in results if 'error' not in r}) or [1]
    span = str(rounds[0]) if len(rounds) == 1 else f'{rounds[0]}-{rounds[-1]}'
    over_rounds = (f' (median over {span} rounds, the whole plan run one '
                   'measurement after the other each round)' if rounds[-1] > 1 else '')
    malloc = f"; {machine['malloc']}" if machine.get('malloc') else ''
    lines = [
        f"Measured {machine['date']} on {hw}{malloc}; torch {machine['torch']}, "
        f"device {machine['device']}{amp}, batch "
        f"{results[0]['batch'] if results else 1}. Time: median of the timed "
        f"runs{over_rounds}; memory: peak RSS of the process (CPU) or peak "
        'allocated (CUDA), and the part the step added.', '',
        '| level | model | mode | input | params | time (s) | images/s | '
        'peak memory (GiB) | step memory (GiB) |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |'
    ]
    for r in results:
        size = f"{r['size'][0]}x{r['size'][1]}"
        head = f"| {r['level']} | {LABELS[r['model']]} | {r['mode']} | {size}"
        if 'error' in r:
            lines.append(f"{head} | | {r['error']} | | | |")
            continue
        lines.append(
            f"{head} | {r['params'] / 1e6:.1f}M | {r['seconds']:.3f} | "
            f"{r['images_per_s']:.2f} | {r['peak_gib']:.2f} | "
            f"{r['step_gib']:.2f} |")
    goal_lines = goals(results)
    if goal_lines:
        lines += ['', 'Goals (ratios from this run):', ''] + goal_lines
    plain_lines = plain_comparison(results)
    if plain_lines:
        lines += ['', 'Plain ViT3 against DeiT (this run; the papers measured on GPUs):',
                  ''] + plain_lines
    lines += breakdown_table(results)
    return '\n'.join(lines) + '\n'


def breakdown_table(results: Sequence[dict]) -> List[str]:
    """The ``--breakdown`` times as a table, or nothing without them."""
    rows = [r for r in results if 'parts' in r and 'error' not in r]
    if not rows:
        return []
    groups = [g for g in PART_GROUPS if any(g in r['parts'] for r in rows)]
    lines = [
        '', 'Where the time goes (seconds; each part of the backbone timed on its '
        'own, fed what it gets in the model; "rest" is the whole step less the '
        'parts: reshapes and dropout between them, the loss, timing noise):', '',
        '| model | mode | input | ' + ' | '.join(groups) + ' | rest | whole |',
        '| --- ' * (len(groups) + 5) + '|'
    ]
    for r in rows:
        cells = [f"{r['parts'][g]:.3f}" if g in r['parts'] else '' for g in groups]
        rest = r['seconds'] - sum(r['parts'].values())
        lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {r['size'][0]}x{r['size'][1]} | "
                     + ' | '.join(cells) + f" | {rest:.3f} | {r['seconds']:.3f} |")
    return lines + ops_table(rows)


def ops_table(results: Sequence[dict]) -> List[str]:
    """The ``--breakdown`` operator split (CPU) as a table, or nothing."""
    rows = [r for r in results if 'ops' in r and 'error' not in r]
    if not rows:
        return []
    lines = [
        '', 'What the operators compute (per step under torch.profiler, self CPU '
        'time in seconds; "other" is everything but matrix-product and '
        'convolution kernels: element-wise work, norms, copies, reductions; '
        'the profiler makes a step slower than a timed one):', '',
        '| model | mode | input | matrix products | G multiply-adds | '
        'G multiply-adds/s | convolutions | other | profiled step | timed step |',
        '| --- ' * 10 + '|'
    ]
    for r in rows:
        ops = r['ops']
        mm = ops['matrix products']
        rate = f"{ops['gmac'] / mm:.1f}" if mm > 0 else ''
        lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {r['size'][0]}x{r['size'][1]} | "
                     f"{mm:.3f} | {ops['gmac']:.1f} | {rate} | {ops['convolutions']:.3f} | "
                     f"{ops['other']:.3f} | {ops['profiled']:.3f} | {r['seconds']:.3f} |")
    return lines


def plot(results: Sequence[dict], path: str, machine: dict) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    ok = [r for r in results if 'error' not in r]
    levels = [lv for lv in ('backbone', 'detector')
              if any(r['level'] == lv for r in ok)]
    if not levels:
        return
    panels = [(lv, mode, field) for lv in levels for field in
              ('seconds', 'peak_gib') for mode in ('infer', 'train')]
    cols = 4
    rows = len(levels)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows),
                             squeeze=False)
    for ax, (level, mode, field) in zip(axes.flat, panels):
        drawn = False
        for model in LABELS:
            pts = sorted((r['size'][0] * r['size'][1], r[field]) for r in ok
                         if r['model'] == model and r['level'] == level
                         and r['mode'] == mode)
            if not pts:
                continue
            drawn = True
            ax.plot(*zip(*pts), marker='o', label=LABELS[model],
                    linestyle='--' if model.endswith('plain') else '-')
        if drawn:  # slopes 1 and 2 through the smallest ViT3-T point
            first = next((m for m in ('vit3-t', 'plain-vit3-t') if any(
                r['model'] == m for r in ok)), None)
            anchor = sorted((r['size'][0] * r['size'][1], r[field])
                            for r in ok if r['level'] == level
                            and r['mode'] == mode and r['model'] == first)
            if anchor:
                p0, v0 = anchor[0]
                xs = [p0, max(r['size'][0] * r['size'][1] for r in ok)]
                for slope, style in ((1, ':'), (2, '-.')):
                    ax.plot(xs, [v0 * (x / p0)**slope for x in xs],
                            color='grey', linestyle=style, linewidth=1,
                            label=f'slope {slope} ({"linear" if slope == 1 else "quadratic"})')
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
        ax.set_xlabel('pixels per image')
        ax.set_ylabel('time per step (s)' if field == 'seconds' else
                      'peak memory (GiB)')
        ax.set_title(f'{level}, {"inference" if mode == "infer" else "training step"}')
        ax.grid(True, which='both', alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for hnd, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(hnd)
                labels.append(lab)
    fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 5),
               fontsize=8)
    fig.suptitle(f"{machine['device'].upper()}: {machine.get('gpu') or machine['cpu']}"
                 f" ({machine['threads']} threads), batch "
                 f"{ok[0]['batch']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out_dir: str, results: List[dict], machine: dict) -> None:
    with open(osp.join(out_dir, 'benchmark.md'), 'w') as f:
        f.write(markdown(results, machine))
    with open(osp.join(out_dir, 'machine.json'), 'w') as f:
        json.dump(machine, f, indent=1)
    plot(results, osp.join(out_dir, 'benchmark.png'), machine)


def read_results(out_dir: str) -> List[dict]:
    path = osp.join(out_dir, 'results.jsonl')
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def aggregate(results: Sequence[dict]) -> List[dict]:
    """One result per (level, model, mode, size) from several ``--rounds``:
    the median time over the rounds (and of ``--breakdown``'s seconds), the
    largest peak memory. A measurement
    that failed in every round keeps its first error."""
    groups: Dict[tuple, List[dict]] = {}
    for r in results:
        groups.setdefault(_key(r), []).append(r)
    merged = []
    for rows in groups.values():
        ok = [r for r in rows if 'error' not in r]
        if not ok:
            merged.append(rows[0])
            continue
        sec = statistics.median(r['seconds'] for r in ok)
        extra = {}
        for field in ('parts', 'ops'):  # --breakdown's per-part and per-class seconds
            if all(field in r for r in ok):
                extra[field] = {k: statistics.median(r[field][k] for r in ok)
                                for k in ok[0][field]}
        merged.append(dict(ok[0], **extra, seconds=sec, images_per_s=ok[0]['batch'] / sec,
                           runs=sum(r['runs'] for r in ok), rounds=len(ok),
                           peak_gib=max(r['peak_gib'] for r in ok),
                           step_gib=max(r['step_gib'] for r in ok)))
    return merged


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Speed and peak memory of ViT3 against Swin-T, ResNet-50 '
        'and a global-attention ViT-S',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS,
                        choices=list(BACKBONES))
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[parse_size(s) for s in DEFAULT_SIZES],
                        help='input sizes, H or HxW')
    parser.add_argument('--modes', nargs='+', default=['infer', 'train'],
                        choices=['infer', 'train'])
    parser.add_argument('--levels', nargs='+', default=['backbone'],
                        choices=['backbone', 'detector'],
                        help='the backbone alone, or the whole Mask R-CNN')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', action='store_true',
                        help='bf16 autocast (ViT3 keeps its inner step in '
                        'float32)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: torch\'s choice)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=3,
                        help='timed runs (fewer once --max-time is spent)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='run the whole plan this many times, one '
                        'measurement after the other, and report the median '
                        'time over the rounds: on a shared machine a slow '
                        'spell then hits every model alike')
    parser.add_argument('--max-time', type=float, default=60,
                        help='seconds of timed runs per measurement')
    parser.add_argument('--timeout', type=float, default=900,
                        help='seconds before a measurement is given up')
    parser.add_argument('--mem-limit', type=float, default=None,
                        help='GiB of address space per measurement on CPU; '
                        'default 90%% of the machine\'s memory')
    parser.add_argument('--breakdown', action='store_true',
                        help='also time each part of the backbone on its own '
                        '(stem, each stage\'s blocks, each down-sampling, the '
                        'output norms), fed what it gets in the model, and '
                        'on CPU split the operator time of a few profiled '
                        'steps into matrix products, convolutions and the rest; '
                        'backbone level only')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--replot', metavar='DIR',
                        help='only redraw the table and plot from DIR\'s '
                        'results.jsonl')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f'--rounds must be at least 1, not {args.rounds}')
    if args.mem_limit is None:
        args.mem_limit = 0.9 * os.sysconf('SC_PAGE_SIZE') * \
            os.sysconf('SC_PHYS_PAGES') / 2**30
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    if args.replot:
        results = aggregate(read_results(args.replot))
        with open(osp.join(args.replot, 'machine.json')) as f:
            machine = json.load(f)
        write_reports(args.replot, results, machine)
        print(markdown(results, machine))
        return 0
    if args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            print('--device cuda: no CUDA device is available', file=sys.stderr)
            return 2
    from mmengine.utils import ProgressBar
    os.makedirs(args.out_dir, exist_ok=True)
    try:
        machine = machine_info(args.device, args.threads)
    except ValueError as err:  # a bad MMVIT3_MALLOC
        print(err, file=sys.stderr)
        return 2
    jobs = plan(args)
    results: List[dict] = []
    log = osp.join(args.out_dir, 'results.jsonl')
    rounds = f' x {args.rounds} rounds' if args.rounds > 1 else ''
    print(f'{len(jobs)} measurements{rounds}, each in its own process; '
          f'results go to {log} as they come')
    bar = ProgressBar(len(jobs) * args.rounds)
    with open(log, 'w') as f:
        for round_ in range(args.rounds):
            for job in jobs:
                result = dict(run_job(job, args.timeout), round=round_)
                results.append(result)
                f.write(json.dumps(result) + '\n')
                f.flush()
                bar.update()
    print()
    results = aggregate(results)
    write_reports(args.out_dir, results, machine)
    print(markdown(results, machine))
    print(f'Wrote {args.out_dir}/benchmark.md and benchmark.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
