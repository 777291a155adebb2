# Copyright (c) mmvit3 authors. All rights reserved.
"""CPU (oneDNN) tuning of the dense convolutions of the H-ViT³ stem and
patch merging, as the custom op ``mmvit3::conv2d_cpu``; used on CPU only
(:mod:`mmvit3.models.fused` binds it).

Measured with torch 2.13 on a 2-core x86 CPU (the stem at 800x1344): a 3x3
convolution's forward is 1.4-1.9x faster with channels-last tensors and its
input gradient up to 3.7x (conv.3), while oneDNN's channels-last weight
gradient is 2.2-3.8x slower than NCHW; an im2col matrix product over the
channels-last gradient (no layout copy of it) is faster than both for conv.3.
A 1x1 convolution is a matrix product over the channels-last tokens, 2.5x
faster than oneDNN's NCHW kernels. Autograd would run all passes in the
input's format, so ``mmvit3::conv2d_cpu`` picks per pass; it keeps its input
in the format it came in and converts only what a pass needs (a layout copy
of a 69 MB map costs about as much as the 3x3 forward that made it).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import call_conv_op, conv_setup_context, relu_backward

_CL = torch.channels_last


def _pointwise(weight: Tensor, stride: int, padding: int) -> bool:
    return weight.shape[-2:] == (1, 1) and stride == 1 and padding == 0


@torch.library.custom_op('mmvit3::conv2d_cpu', mutates_args=())
def _conv2d_cpu(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int,
                relu: bool) -> Tensor:
    """``conv2d(x, weight, bias, stride, padding)`` (then ReLU if ``relu``)
    -> a channels-last map; a 1x1 convolution as a linear layer over the
    channels-last tokens."""
    if _pointwise(weight, stride, padding):
        b, c, h, w = x.shape
        tokens = x.contiguous(memory_format=_CL).permute(0, 2, 3, 1).reshape(b * h * w, c)
        out = F.linear(tokens, weight.flatten(1), bias)  # (B h w, Cout)
        out = out.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, Cout, h, w) channels-last
    else:
        out = F.conv2d(x.contiguous(memory_format=_CL), weight.contiguous(memory_format=_CL),
                       bias, stride, padding).contiguous(memory_format=_CL)
    return out.relu_() if relu else out


@_conv2d_cpu.register_fake
def _(x, weight, bias, stride, padding, relu):
    b, _, h, w = x.shape
    k = weight.shape[-1]
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    return torch.empty((b, weight.shape[0], oh, ow), dtype=x.dtype, device=x.device,
                       memory_format=_CL)


@torch.library.custom_op('mmvit3::conv2d_cpu_backward', mutates_args=())
def _conv2d_cpu_backward(grad: Tensor, x: Tensor, weight: Tensor, stride: int, padding: int,
                         need_x: bool, out: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``mmvit3::conv2d_cpu`` for ``x`` (empty unless
    ``need_x``), the weight and the bias; ``out`` is the op's output when it
    applied ReLU (whose gradient is taken first), else None."""
    grad = relu_backward(grad.contiguous(memory_format=_CL), out)
    d_b = grad.sum((0, 2, 3))
    if _pointwise(weight, stride, padding):
        b, c, h, w = x.shape
        g = grad.permute(0, 2, 3, 1).reshape(b * h * w, -1)  # (B h w, Cout), a view
        tokens = x.contiguous(memory_format=_CL).permute(0, 2, 3, 1).reshape(b * h * w, c)
        d_w = (g.t() @ tokens).view_as(weight)
        d_x = ((g @ weight.flatten(1)).view(b, h, w, c).permute(0, 3, 1, 2).contiguous(
            memory_format=_CL) if need_x else x.new_empty(0))
        return d_x, d_w, d_b
    d_x = x.new_empty(0)
    if need_x:  # only the input's shape and format are read
        like_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_CL)
        d_x = torch.ops.aten.convolution_backward(
            grad, like_x, weight.contiguous(memory_format=_CL), None, [stride] * 2,
            [padding] * 2, [1, 1], False, [0, 0], 1, [True, False, False])[0]
    # im2col and one product: no NCHW copy of the gradient needed
    b, cout, oh, ow = grad.shape
    cols = F.unfold(x, weight.shape[-2:], padding=padding, stride=stride)  # (B, Cin k k, oh ow)
    g = grad.permute(0, 2, 3, 1).reshape(b, oh * ow, cout)  # a view
    d_w = (cols @ g).sum(0).t().contiguous().view(weight.shape)  # (Cout, Cin, k, k)
    return d_x, d_w, d_b


@_conv2d_cpu_backward.register_fake
def _(grad, x, weight, stride, padding, need_x, out):
    d_x = (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_CL)
           if need_x else x.new_empty(0))
    return d_x, torch.empty_like(weight), grad.new_empty(weight.shape[:1])


def _conv_grad(ctx, grad):
    x, weight, out = ctx.saved_tensors
    stride, padding, has_bias = ctx.meta
    need_x = ctx.needs_input_grad[0]
    d_x, d_w, d_b = torch.ops.mmvit3.conv2d_cpu_backward(grad, x, weight, stride, padding,
                                                         need_x, out)
    return d_x if need_x else None, d_w, d_b if has_bias else None, None, None, None


_conv2d_cpu.register_autograd(_conv_grad, setup_context=conv_setup_context)


def conv2d_cpu(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int,
               relu: bool = False) -> Tensor:
    """``conv2d(x, weight, bias, stride, padding)`` (ungrouped, zero
    padding), then ReLU if ``relu``, through ``mmvit3::conv2d_cpu`` in the
    dtype autocast would give it (or ``x``'s without autocast)."""
    return call_conv_op(torch.ops.mmvit3.conv2d_cpu, x, weight, bias, stride, padding, relu)
