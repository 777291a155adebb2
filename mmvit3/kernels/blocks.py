# Copyright (c) mmvit3 authors. All rights reserved.
"""The fused forwards of the H-ViT³ block, stem and patch merging, which
:mod:`.dispatch` runs in place of the modules' plain code. Each computes what
the module's own ``forward`` computes (the tests compare outputs and every
gradient, both ways).

* block (any device): ``norm -> linear`` pairs, the TTT inner step and the
  MLP tail as fused custom ops; the CPE on a channels-last view of the tokens
  (``mmvit3::dwconv2d``);
* stem and patch merging (CPU only, where their layouts were measured): see
  :mod:`.conv_cpu`; in inference eval-mode BatchNorms are folded into the
  convolutions.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from .common import grid, tokens
from .conv_cpu import conv_bn_act, fold_norm, norm_act
from .dispatch import register
from .dwconv import dwconv2d
from .mlp_fused import layer_norm_linear, mlp_tail
from .ttt_fused import ttt_inner

HWShape = Tuple[int, int]


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    pad_h, pad_w = -x.shape[2] % multiple, -x.shape[3] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def cpe(block: torch.nn.Module, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """``x + cpe(x)`` with the depth-wise convolution on a channels-last view
    of the tokens (no layout copies)."""
    return x + tokens(dwconv2d(grid(x, hw_shape), block.cpe))


def mixer(block: torch.nn.Module, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """``attn(norm1(x))`` with ``norm1 -> qkv`` and the inner step fused."""
    attn = block.attn
    qkv = layer_norm_linear(x, block.norm1, attn.qkv)  # (B, N, 3C + 3d)
    inner = ttt_inner(qkv, attn.w1, attn.w2, attn.w3, hw_shape, attn.num_heads,
                      attn.inner_loss_scale, attn.inner_lr, attn.use_rope)  # (B, N, C + d)
    return attn.proj(inner)


@register('ViT3Block')
def vit3_block(block: torch.nn.Module, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """:class:`~mmvit3.models.vit3.ViT3Block`, fused."""
    x = cpe(block, x.contiguous(), hw_shape)
    x = x + block.drop_path(mixer(block, x, hw_shape))
    mlp = block.mlp
    if mlp.training and mlp.drop.p > 0:  # dropout inside the tail: the plain MLP
        return x + block.drop_path(mlp(block.norm2(x), hw_shape))
    hidden = layer_norm_linear(x, block.norm2, mlp.fc1)  # (B, N, 4C)
    return x + block.drop_path(mlp_tail(hidden, mlp.dwc, mlp.fc2, hw_shape))


@register('ConvStem', devices=('cpu', ))
def conv_stem(stem: torch.nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, HWShape]:
    """:class:`~mmvit3.models.vit3.ConvStem` tuned for oneDNN: in training the
    narrow conv.0-2 stay NCHW (a layout change would cost more than it
    saves) and conv.3 / conv.4 pick the format per pass; in inference all
    five run channels-last with the BatchNorms folded in (2x faster)."""
    x = _pad_to_multiple(x, 4)
    for i, m in enumerate(stem.conv):
        x = m(x) if i < 3 and torch.is_grad_enabled() else conv_bn_act(m, x)
    return tokens(x).contiguous(), tuple(x.shape[-2:])  # (B, N, C0), (h, w)


@register('PatchMerging', devices=('cpu', ))
def patch_merging(merge: torch.nn.Module, x: torch.Tensor,
                  hw_shape: HWShape) -> Tuple[torch.Tensor, HWShape]:
    """:class:`~mmvit3.models.vit3.PatchMerging` with its 1x1 convolutions as
    linear layers on the tokens and the depth-wise one on a channels-last
    view (CPU depth-wise kernels are several times faster channels-last)."""
    expand, down, project = merge.conv
    x = _pad_to_multiple(grid(x.contiguous(), hw_shape), 2)  # (B, Cin, h', w')
    x = conv_bn_act(expand, x)  # 1x1 + ReLU: a linear layer on the tokens
    x = dwconv2d(x, down.conv, relu=True)  # (B, 4 Cout, h, w) channels-last
    hw_shape = tuple(x.shape[-2:])
    x = tokens(x)  # (B, N', 4 Cout), a view
    folded = None if torch.is_grad_enabled() else fold_norm(project.conv, project.norm)
    if folded is not None:  # inference with an eval-mode BatchNorm
        return F.linear(x, folded[0].flatten(1), folded[1]), hw_shape  # (B, N', Cout)
    x = F.linear(x, project.conv.weight.flatten(1), project.conv.bias)  # (B, N', Cout)
    return tokens(norm_act(project, grid(x, hw_shape))), hw_shape


from . import plain_block  # noqa: E402,F401  (registers the plain ViT³ block's fused forward)
