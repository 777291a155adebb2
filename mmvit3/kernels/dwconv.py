# Copyright (c) mmvit3 authors. All rights reserved.
"""``mmvit3::dwconv2d``: a depth-wise convolution on a channels-last map, as
a custom op with its gradient as a second op.

The fused blocks view their ``(B, N, C)`` tokens as channels-last maps for
the CPE and the patch merging's depth-wise convolution (no layout copy; CPU
depth-wise kernels are several times faster channels-last). Written as
``F.conv2d``, ``torch.compile`` (inductor) lowers a grouped convolution in
NCHW and copies every map into that layout first; as a custom op it keeps
the layout the tokens already have. A ReLU after it runs in the op too
(inductor would save a boolean mask for its gradient, and on CPU its
boolean kernels are several times slower than eager's ReLU). The weight's
gradient gets standard strides (DDP's gradient buckets warn about and copy
any other).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import call_conv_op, conv_setup_context, relu_backward, with_standard_strides

_CL = torch.channels_last


def _out_size(size: int, stride: int, padding: int, kernel: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@torch.library.custom_op('mmvit3::dwconv2d', mutates_args=())
def _dwconv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int,
              relu: bool) -> Tensor:
    """``conv2d(x, weight, bias, stride, padding, groups=C)`` (``weight``
    (C, 1, k, k)), then ReLU if ``relu`` -> a channels-last map."""
    out = F.conv2d(x.contiguous(memory_format=_CL), weight, bias, stride, padding,
                   groups=weight.shape[0]).contiguous(memory_format=_CL)
    return out.relu_() if relu else out


@_dwconv2d.register_fake
def _(x, weight, bias, stride, padding, relu):
    b, c, h, w = x.shape
    k = weight.shape[-1]
    return torch.empty((b, c, _out_size(h, stride, padding, k), _out_size(w, stride, padding, k)),
                       dtype=x.dtype, device=x.device, memory_format=_CL)


@torch.library.custom_op('mmvit3::dwconv2d_backward', mutates_args=())
def _dwconv2d_backward(grad: Tensor, x: Tensor, weight: Tensor, stride: int, padding: int,
                       need_x: bool, need_bias: bool,
                       out: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``mmvit3::dwconv2d`` for ``x`` (channels-last; empty
    unless ``need_x``), the weight (standard strides) and the bias (empty
    unless ``need_bias``); ``out`` is the op's output when it applied ReLU,
    else None."""
    channels = weight.shape[0]
    grad = relu_backward(grad.contiguous(memory_format=_CL), out)
    d_x, d_w, d_b = torch.ops.aten.convolution_backward(
        grad, x.contiguous(memory_format=_CL), weight,
        [channels] if need_bias else None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0],
        channels, [need_x, True, need_bias])
    d_x = d_x.contiguous(memory_format=_CL) if need_x else x.new_empty(0)
    return d_x, with_standard_strides(d_w), d_b if need_bias else x.new_empty(0)


@_dwconv2d_backward.register_fake
def _(grad, x, weight, stride, padding, need_x, need_bias, out):
    d_x = (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_CL)
           if need_x else x.new_empty(0))
    return d_x, torch.empty_like(weight, memory_format=torch.contiguous_format), (
        grad.new_empty(weight.shape[:1]) if need_bias else x.new_empty(0))


def _grad(ctx, grad):
    x, weight, out = ctx.saved_tensors
    stride, padding, has_bias = ctx.meta
    need_x, need_bias = ctx.needs_input_grad[0], has_bias and ctx.needs_input_grad[2]
    d_x, d_w, d_b = torch.ops.mmvit3.dwconv2d_backward(grad, x, weight, stride, padding,
                                                       need_x, need_bias, out)
    return d_x if need_x else None, d_w, d_b if need_bias else None, None, None, None


_dwconv2d.register_autograd(_grad, setup_context=conv_setup_context)


def dwconv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int = 1,
             padding: int = 1, relu: bool = False) -> Tensor:
    """The depth-wise convolution with ``weight`` (C, 1, k, k) on the
    channels-last map ``x``, then ReLU if ``relu``, through
    ``mmvit3::dwconv2d`` in the dtype autocast would give it (or ``x``'s
    without autocast)."""
    return call_conv_op(torch.ops.mmvit3.dwconv2d, x, weight, bias, stride, padding, relu)
