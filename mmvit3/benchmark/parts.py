# Copyright (c) mmvit3 authors. All rights reserved.
"""``--breakdown``: where a backbone's time goes, each part (stem, each
stage's blocks, each down-sampling, the output norms) timed on its own, fed
what it gets in the model; on CPU the operators of a few profiled steps sorted
into matrix products, convolutions and the rest."""
import math
import statistics
import time
from typing import Dict, List, Optional

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
              'aten::baddbmm': (1, 2), 'aten::_addmm_activation': (1, 2),
              'mkldnn::_linear_pointwise': (0, 1)}
#: of those, the linear layers: ``(.., k)`` tokens and an ``(n, k)`` weight
LINEAR_OPS = frozenset({'mkldnn::_linear_pointwise'})
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
        if name in LINEAR_OPS:
            return math.prod(a[:-1]) * a[-1] * b[0]
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
