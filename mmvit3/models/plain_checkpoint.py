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

from .checkpoint import (BackboneLayout, FilterReport, filter_state_dict,
                         load_backbone_weights)


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


PLAIN_LAYOUT = BackboneLayout(
    name='PlainViT3', kind='plain ViT3', marker='blocks.i.attn.w1',
    drop_rules=(('classifier head', re.compile(r'^head\.')),
                ('final norm; the last block is not in out_indices', re.compile(r'^norm\.')),
                ('output norms of blocks not in out_indices', re.compile(r'^norm\d+\.'))),
    infer_arch=infer_plain_arch, arch_name=plain_arch_name)


def plain_checkpoint_filter_fn(checkpoint: Any,
                               model: nn.Module,
                               key: Optional[str] = None,
                               prefix: Optional[str] = None
                               ) -> Tuple[Dict[str, torch.Tensor], FilterReport]:
    """Turn a released plain ViT³ checkpoint into a state dict for ``model``
    (a :class:`~mmvit3.models.vit3_plain.PlainViT3`):
    :func:`~mmvit3.models.checkpoint.filter_state_dict` dropping the
    classifier ``head``, the final ``norm`` when the model does not output
    the last block, and output norms of blocks it does not output.

    Raises:
        CheckpointMismatchError: Entries the model lacks, lacks in the file
            or holds with other shapes (the first ones are named, and the
            arch of each when they differ).
    """
    return filter_state_dict(checkpoint, model, PLAIN_LAYOUT, key, prefix)


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
    return load_backbone_weights(model, checkpoint, PLAIN_LAYOUT, key, prefix, trusted,
                                 map_location)
