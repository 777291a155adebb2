# Copyright (c) mmvit3 authors. All rights reserved.
"""The fused forwards of the ViT³ block, the H-ViT³ stem and its patch
merging: the kernels of :mod:`mmvit3.kernels` bound to the model's modules,
registered by module class with :func:`.impl.register`. Each computes what
the module's own ``forward`` computes (the tests compare outputs and every
gradient, both ways).

* block (any device): ``norm -> linear`` pairs and the TTT inner step as
  fused custom ops, the CPE on a channels-last view of the tokens; the
  MLP's tail fused for H-ViT³'s convolutional MLP, its own layers for the
  plain one;
* stem and patch merging (CPU only, where their layouts were measured):
  oneDNN-tuned convolutions; in inference eval-mode BatchNorms are folded
  into the convolutions.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ..kernels.common import grid, tokens
from ..kernels.conv_cpu import conv2d_cpu
from ..kernels.dwconv import dwconv2d
from ..kernels.mlp_fused import layer_norm_linear, mlp_tail
from ..kernels.ttt_fused import ttt_inner
from .blocks import ViT3Block
from .impl import register
from .layers import ConvBNAct, ConvFFN, HWShape, Mlp
from .vit3 import ConvStem, PatchMerging


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    pad_h, pad_w = -x.shape[2] % multiple, -x.shape[3] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def _norm_linear(x: torch.Tensor, norm: torch.nn.LayerNorm,
                 linear: torch.nn.Linear) -> torch.Tensor:
    """``linear(norm(x))`` as one fused op."""
    return layer_norm_linear(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias)


def _dwconv(x: torch.Tensor, conv: torch.nn.Conv2d, relu: bool = False) -> torch.Tensor:
    """The depth-wise convolution ``conv`` on the channels-last map ``x``."""
    if (conv.groups != conv.in_channels or conv.out_channels != conv.in_channels
            or conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1]
            or conv.dilation != (1, 1) or conv.padding_mode != 'zeros'):
        raise ValueError(f'dwconv2d cannot run {conv}')
    return dwconv2d(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0], relu)


# ---------------------------------------------------------------------------
# The block
# ---------------------------------------------------------------------------
def _conv_ffn(block: ViT3Block, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """``mlp(norm2(x))`` of H-ViT³'s MLP: ``norm2 -> fc1`` and the tail fused."""
    mlp = block.mlp
    if mlp.training and mlp.drop.p > 0:  # dropout inside the tail: the plain MLP
        return mlp(block.norm2(x), hw_shape)
    hidden = _norm_linear(x, block.norm2, mlp.fc1)  # (B, N, 4C)
    return mlp_tail(hidden, mlp.dwc.weight, mlp.dwc.bias, mlp.fc2.weight, mlp.fc2.bias,
                    hw_shape)


def _plain_mlp(block: ViT3Block, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """``mlp(norm2(x))`` of plain ViT³'s MLP: ``norm2 -> fc1`` fused."""
    mlp = block.mlp
    hidden = mlp.drop(mlp.act(_norm_linear(x, block.norm2, mlp.fc1)))  # (B, N, 4C)
    return mlp.drop(mlp.fc2(hidden))


#: MLP class -> its fused ``mlp(norm2(x))``.
_MLPS = {ConvFFN: _conv_ffn, Mlp: _plain_mlp}


@register(ViT3Block)
def vit3_block(block: ViT3Block, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """:class:`~mmvit3.models.blocks.ViT3Block`, fused."""
    x = x.contiguous()
    x = x + tokens(_dwconv(grid(x, hw_shape), block.cpe))  # CPE, channels-last
    attn = block.attn
    qkv = _norm_linear(x, block.norm1, attn.qkv)  # (B, N, 3C + 3d)
    inner = ttt_inner(qkv, attn.w1, attn.w2, attn.w3, hw_shape, attn.num_heads,
                      attn.inner_loss_scale, attn.inner_lr, attn.use_rope)  # (B, N, C + d)
    x = x + block.drop_path(attn.proj(inner))
    return x + block.drop_path(_MLPS[type(block.mlp)](block, x, hw_shape))


# ---------------------------------------------------------------------------
# The H-ViT³ stem and patch merging (CPU)
# ---------------------------------------------------------------------------
def _fold_norm(conv: torch.nn.Conv2d,
               bn: Optional[torch.nn.Module]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``conv``'s weight and bias with an eval-mode BatchNorm folded in
    (``bn(conv(x)) == conv'(x)``), or None when ``bn`` is not one."""
    if not isinstance(bn, _BatchNorm) or bn.training or bn.running_mean is None:
        return None
    scale = torch.rsqrt(bn.running_var + bn.eps)  # (Cout,)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    bias = bias * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def _norm_act(m: ConvBNAct, x: torch.Tensor) -> torch.Tensor:
    """The norm and activation of ``m`` after its convolution."""
    if m.norm is not None:
        x = m.norm(x)
    if m.act is not None:
        x = m.act(x)
    return x


def _conv_bn_act(m: ConvBNAct, x: torch.Tensor) -> torch.Tensor:
    """``m`` through ``mmvit3::conv2d_cpu``, with an eval-mode BatchNorm
    folded into the convolution when no gradient is recorded, and the ReLU
    in the op where no norm comes between."""
    conv = m.conv
    stride, padding = conv.stride, conv.padding
    if (conv.groups != 1 or conv.dilation != (1, 1) or stride[0] != stride[1]
            or isinstance(padding, str) or padding[0] != padding[1]
            or conv.padding_mode != 'zeros'):
        raise ValueError(f'conv2d_cpu cannot run {conv}')
    folded = None if torch.is_grad_enabled() else _fold_norm(conv, m.norm)
    weight, bias, norm = (conv.weight, conv.bias, m.norm) if folded is None else (
        *folded, None)
    if norm is None:
        return conv2d_cpu(x, weight, bias, stride[0], padding[0], relu=m.act is not None)
    return _norm_act(m, conv2d_cpu(x, weight, bias, stride[0], padding[0]))


@register(ConvStem, devices=('cpu', ))
def conv_stem(stem: ConvStem, x: torch.Tensor) -> Tuple[torch.Tensor, HWShape]:
    """:class:`~mmvit3.models.vit3.ConvStem` tuned for oneDNN: in training the
    narrow conv.0-2 stay NCHW (a layout change would cost more than it
    saves) and conv.3 / conv.4 pick the format per pass; in inference all
    five run channels-last with the BatchNorms folded in."""
    x = _pad_to_multiple(x, 4)
    for i, m in enumerate(stem.conv):
        x = m(x) if i < 3 and torch.is_grad_enabled() else _conv_bn_act(m, x)
    return tokens(x).contiguous(), tuple(x.shape[-2:])  # (B, N, C0), (h, w)


@register(PatchMerging, devices=('cpu', ))
def patch_merging(merge: PatchMerging, x: torch.Tensor,
                  hw_shape: HWShape) -> Tuple[torch.Tensor, HWShape]:
    """:class:`~mmvit3.models.vit3.PatchMerging` with its 1x1 convolutions as
    linear layers on the tokens and the depth-wise one on a channels-last
    view (CPU depth-wise kernels are several times faster channels-last)."""
    expand, down, project = merge.conv
    x = _pad_to_multiple(grid(x.contiguous(), hw_shape), 2)  # (B, Cin, h', w')
    x = _conv_bn_act(expand, x)  # 1x1 + ReLU: a linear layer on the tokens
    x = _dwconv(x, down.conv, relu=True)  # (B, 4 Cout, h, w) channels-last
    hw_shape = tuple(x.shape[-2:])
    x = tokens(x)  # (B, N', 4 Cout), a view
    folded = None if torch.is_grad_enabled() else _fold_norm(project.conv, project.norm)
    if folded is not None:  # inference with an eval-mode BatchNorm
        return F.linear(x, folded[0].flatten(1), folded[1]), hw_shape  # (B, N', Cout)
    x = F.linear(x, project.conv.weight.flatten(1), project.conv.bias)  # (B, N', Cout)
    return tokens(_norm_act(project, grid(x, hw_shape))), hw_shape
