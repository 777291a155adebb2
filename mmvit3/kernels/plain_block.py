# Copyright (c) mmvit3 authors. All rights reserved.
"""The fused forward of the plain ViT³ block, which :mod:`.dispatch` runs in
place of :class:`~mmvit3.models.vit3_plain.PlainViT3Block`'s plain code: the
CPE on a channels-last view of the tokens, ``norm1 -> qkv`` and the TTT inner
step (no RoPE) as the H-ViT³ block's fused ops, and ``norm2 -> fc1`` fused;
the rest of the MLP (GELU, fc2, dropout) as the module's own layers."""
from typing import Tuple

import torch

from .blocks import cpe, mixer
from .dispatch import register
from .mlp_fused import layer_norm_linear

HWShape = Tuple[int, int]


@register('PlainViT3Block')
def plain_vit3_block(block: torch.nn.Module, x: torch.Tensor,
                     hw_shape: HWShape) -> torch.Tensor:
    """:class:`~mmvit3.models.vit3_plain.PlainViT3Block`, fused."""
    x = cpe(block, x.contiguous(), hw_shape)
    x = x + block.drop_path(mixer(block, x, hw_shape))
    mlp = block.mlp
    hidden = mlp.drop(mlp.act(layer_norm_linear(x, block.norm2, mlp.fc1)))  # (B, N, 4C)
    return x + block.drop_path(mlp.drop(mlp.fc2(hidden)))
