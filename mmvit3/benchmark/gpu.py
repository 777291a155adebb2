# Copyright (c) mmvit3 authors. All rights reserved.
"""tools/gpu_benchmark.py, for a GPU machine with only torch (+ timm) and
mmengine / mmcv-lite (no mmdet): the fused and plain ViT3-T agree
(:func:`check`), then a grid of timings against timm's Swin-T and DeiT-T
where timm is importable (:func:`grid`), written as ``gpu_benchmark.json``
and ``gpu_benchmark.md`` (:func:`write`)."""
import json
import os
import os.path as osp
import time
from typing import List, Sequence

import torch

from ..models import ViT3

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def build(name, h, w):
    """ViT3-T (``vit3-t-fused`` / ``vit3-t-plain``), or timm's Swin-T or DeiT-T
    for an ``h`` x ``w`` input."""
    if name.startswith('vit3-t'):
        return ViT3('tiny', impl='fused' if name.endswith('fused') else 'plain')
    import timm
    if name == 'swin-t':
        return timm.create_model('swin_tiny_patch4_window7_224', img_size=(h, w),
                                 features_only=True)
    return timm.create_model('deit_tiny_patch16_224', dynamic_img_size=True, num_classes=0)


def check(device):
    """Fused == plain (fp32), and both finite with finite gradients under autocast."""
    torch.manual_seed(0)
    plain = ViT3('tiny', impl='plain', drop_path_rate=0.).to(device).train()
    fused = ViT3('tiny', impl='fused', drop_path_rate=0.).to(device).train()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 96, 160, device=device)
    report = {}
    for dtype in ('fp32', 'bf16') + (('fp16', ) if device == 'cuda' else ()):
        with torch.autocast(device, DTYPES[dtype], enabled=dtype != 'fp32'):
            outs = [m(x) for m in (plain, fused)]
        errs = [((a.float() - b.float()).norm() / b.float().norm()).item()
                for a, b in zip(*outs)]
        for m, o in zip((plain, fused), outs):
            m.zero_grad()
            sum(t.float().square().mean() for t in o).backward()
        finite = all(torch.isfinite(p.grad).all().item() for m in (plain, fused)
                     for p in m.parameters() if p.grad is not None)
        report[dtype] = dict(max_rel_out_diff=max(errs), grads_finite=finite)
    return report


def measure(name, h, w, batch, dtype, mode, device, runs):
    """Mean seconds per step over ``runs`` after two warm-up steps, and the
    peak memory on CUDA (NaN on CPU)."""
    torch.manual_seed(0)
    model = build(name, h, w).to(device).train(mode == 'train')
    x = torch.randn(batch, 3, h, w, device=device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

    def step():
        with torch.autocast(device, DTYPES[dtype], enabled=dtype != 'fp32'), \
                torch.set_grad_enabled(mode == 'train'):
            out = model(x)
            out = out if isinstance(out, (list, tuple)) else [out]
            if mode == 'train':
                sum(o.float().mean() for o in out).backward()

    step(), step()  # warm-up
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    for _ in range(runs):
        step()
    sync()
    seconds = (time.perf_counter() - start) / runs
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda' else float('nan')
    del model, x
    return dict(model=name, size=f'{h}x{w}', batch=batch, dtype=dtype, mode=mode,
                seconds=seconds, images_per_s=batch / seconds, peak_gib=peak)


def grid(args, models: Sequence[str]) -> List[dict]:
    """A row per size, dtype, mode and model, printed as it comes; a model
    that runs out of CUDA memory gets its error instead."""
    rows = []
    for size in args.sizes:
        h, w = map(int, size.split('x'))
        for dtype in args.dtypes:
            for mode in ('infer', 'train'):
                for name in models:
                    try:
                        row = measure(name, h, w, args.batch, dtype, mode, args.device, args.runs)
                    except torch.cuda.OutOfMemoryError as err:  # noqa: PERF203
                        row = dict(model=name, size=size, dtype=dtype, mode=mode, error=str(err)[:200])
                    if args.device == 'cuda':
                        torch.cuda.empty_cache()
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def write(out: str, info: dict, rows: Sequence[dict], batch: int) -> None:
    """``out/gpu_benchmark.json`` (the machine, the check, the rows) and
    ``out/gpu_benchmark.md`` (the rows as a table)."""
    with open(osp.join(out, 'gpu_benchmark.json'), 'w') as f:
        json.dump(dict(info=info, rows=rows), f, indent=1)
    lines = [f"{info['gpu']}, torch {info['torch']}, batch {batch}", '',
             '| model | size | dtype | mode | time (s) | images/s | peak (GiB) |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    lines += [f"| {r['model']} | {r['size']} | {r['dtype']} | {r['mode']} | "
              + (f"{r['seconds']:.4f} | {r['images_per_s']:.1f} | {r['peak_gib']:.2f} |"
                 if 'seconds' in r else f"{r['error']} | | |") for r in rows]
    with open(osp.join(out, 'gpu_benchmark.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def run_gpu(args) -> int:
    """tools/gpu_benchmark.py with its parsed ``args`` (out, device, sizes,
    batch, dtypes, runs): the check, the grid, the two files; returns 0."""
    os.makedirs(args.out, exist_ok=True)
    info = dict(torch=torch.__version__, device=args.device,
                gpu=torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu')
    info['check'] = check(args.device)
    print(json.dumps(info, indent=1), flush=True)
    models = ['vit3-t-plain', 'vit3-t-fused']
    try:
        import timm  # noqa: F401
        models += ['swin-t', 'deit-t']
    except ImportError:
        print('timm not importable: ViT3-T only')
    write(args.out, info, grid(args, models), args.batch)
    return 0
