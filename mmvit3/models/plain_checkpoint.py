# Copyright (c) mmvit3 authors. All rights reserved.
"""Turning the authors' released plain ViT³ files into PlainViT3 backbone
weights: the same layouts, safe loader and report as for H-ViT³
(:mod:`.checkpoint`), with the plain model's names.

The released ImageNet file is a dict with ``'model'`` (the weights, among
them the classifier ``head`` and the final LayerNorm ``norm``),
``'optimizer'``, ``'lr_scheduler'``, ``'max_accuracy'``, ``'epoch'`` and a
pickled yacs ``'config'``.
"""
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..safe_load import load_checkpoint_file
from .checkpoint import (CheckpointMismatchError, FilterReport, _names,
                         _unwrapped_tensors, select_state_dict)

_HEAD = re.compile(r'^head\.')
_FINAL_NORM = re.compile(r'^norm\.')
_OUTPUT_NORM = re.compile(r'^norm\d+\.')


def infer_plain_arch(state_dict: Mapping[str, Any]) -> Optional[dict]:
    """Width, depth and heads of the plain ViT³ a state dict belongs to, or
    None."""
    depth, dims, heads = 0, None, None
    for name, value in state_dict.items():
        m = re.match(r'^blocks\.(\d+)\.attn\.w1$', name)
        if m and value.dim() == 4:
            depth = max(depth, int(m.group(1)) + 1)
            heads, dims = int(value.shape[1]), int(value.shape[1] * value.shape[2])
    if not depth:
        return None
    return {'embed_dims': dims, 'depth': depth, 'num_heads': heads}


def plain_arch_name(arch: Optional[dict]) -> str:
    """``'tiny'``, ``'small'``, ``'base'`` or the dict itself as text."""
    from .vit3_plain import PlainViT3
    for name in ('tiny', 'small', 'base'):
        if arch == PlainViT3.arch_zoo[name]:
            return name
    return str(arch)


def plain_checkpoint_filter_fn(checkpoint: Any,
                               model: nn.Module,
                               key: Optional[str] = None,
                               prefix: Optional[str] = None
                               ) -> Tuple[Dict[str, torch.Tensor], FilterReport]:
    """Turn a released plain ViT³ checkpoint into a state dict for ``model``
    (a :class:`~mmvit3.models.vit3_plain.PlainViT3`).

    Pure: neither the checkpoint nor the model is changed.

    Steps: pick the weights (``'model'``, else ``'state_dict'``, else the
    file itself, or ``key``); keep only the keys under ``prefix`` (given, or
    ``'backbone.'`` for a whole detector / segmentor) and strip it and a DDP
    ``'module.'``; drop the classifier ``head``, the final ``norm`` when the
    model does not output the last block, and output norms of blocks it does
    not output; then check that every remaining entry exists in the model
    with the same shape. Output norms ``norm{i}`` the file lacks are left at
    their initial values (reported as untouched).

    Raises:
        CheckpointMismatchError: Entries the model lacks, lacks in the file
            or holds with other shapes (the first ones are named, and the
            arch of each when they differ).
    """
    state_dict, source_key = select_state_dict(checkpoint, key)
    report = FilterReport(source_key=source_key)
    state = _unwrapped_tensors(state_dict)
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        outside = sorted(k for k in state if not k.startswith(prefix))
        if outside:
            report.dropped[f'outside {prefix!r}'] = outside
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointMismatchError(f'Checkpoint has no entries under {prefix!r}')

    model_state = model.state_dict()
    rules = (('classifier head', _HEAD),
             ('final norm; the last block is not in out_indices', _FINAL_NORM),
             ('output norms of blocks not in out_indices', _OUTPUT_NORM))
    out: Dict[str, torch.Tensor] = {}
    for name in sorted(state):
        if name not in model_state:
            reason = next((r for r, pattern in rules if pattern.search(name)), None)
            if reason is not None:
                report.dropped.setdefault(reason, []).append(name)
                continue
        out[name] = state[name]

    unexpected = [k for k in out if k not in model_state]
    mismatched = [f'{k}: file {tuple(out[k].shape)}, model {tuple(model_state[k].shape)}'
                  for k in out if k in model_state and out[k].shape != model_state[k].shape]
    absent = [k for k in model_state if k not in out]
    report.untouched = [k for k in absent if _OUTPUT_NORM.match(k)]
    missing = [k for k in absent if k not in report.untouched]
    if unexpected or mismatched or missing:
        file_arch, model_arch = infer_plain_arch(state), infer_plain_arch(model_state)
        problems = []
        if file_arch != model_arch:
            what = (f'a plain ViT3 {plain_arch_name(file_arch)}' if file_arch
                    else 'no plain ViT3 (no blocks.i.attn.w1 entries)')
            problems.append(f'the file holds {what}, the model is a plain ViT3 '
                            f'{plain_arch_name(model_arch)}: set arch to match the '
                            f'checkpoint')
        if mismatched:
            problems.append(f'{len(mismatched)} shape mismatches: {_names(mismatched)}')
        if unexpected:
            problems.append(f'{len(unexpected)} entries the model lacks: '
                            f'{_names(unexpected)}')
        if missing:
            problems.append(f'{len(missing)} model entries the file lacks: '
                            f'{_names(missing)}')
        raise CheckpointMismatchError('Checkpoint does not fit this PlainViT3 backbone; '
                                      + '; '.join(problems))
    return out, report


def load_pretrained_plain(model: nn.Module,
                          checkpoint: str,
                          key: Optional[str] = None,
                          prefix: Optional[str] = None,
                          trusted: bool = False,
                          map_location: Any = 'cpu') -> FilterReport:
    """Load released weights into a PlainViT3 backbone through the
    project's safe loader and log what was dropped and left untouched.

    This is what ``init_cfg=dict(type='Pretrained', checkpoint=..., key=...,
    prefix=..., trusted=...)`` on :class:`PlainViT3` runs; the arguments are
    those of :func:`mmvit3.models.checkpoint.load_pretrained`.
    """
    hint = (f"If you trust this file, set trusted=True in the backbone's "
            f"init_cfg, or convert it once into a plain weights file: "
            f"python tools/convert_checkpoint.py {checkpoint} OUT.pth --trusted")
    loaded = load_checkpoint_file(checkpoint, map_location, trusted, hint)
    state_dict, report = plain_checkpoint_filter_fn(loaded, model, key, prefix)
    model.load_state_dict(state_dict, strict=False)
    source = f"entry '{report.source_key}' of " if report.source_key else ''
    print_log(f'PlainViT3: loaded {len(state_dict)} entries from {source}{checkpoint}'
              + (f'\n{report.summary()}' if report.summary() else ''),
              logger='current')
    return report
