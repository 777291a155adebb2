# Copyright (c) mmvit3 authors. All rights reserved.
"""A dense convolution whose forward and backward each run where oneDNN is
fastest on CPU.

Measured with torch 2.13 on a 2-core x86 CPU (the stem at 800x1344): a 3x3
convolution's forward is 1.4-1.9x faster with channels-last tensors and its
input gradient up to 3.7x (conv.3), while oneDNN's channels-last weight
gradient is 2.2-3.8x slower than NCHW; an im2col matrix product over the
channels-last gradient (no layout copy of it) is faster than both for conv.3.
A 1x1 convolution is a matrix product over the channels-last tokens, 2.5x
faster than oneDNN's NCHW kernels. Autograd would run all passes in the
input's format, so :class:`Conv2dFunction` picks per pass.

Memory traffic is dear on such a machine (a layout conversion of a 69 MB map
costs about as much as the 3x3 forward that made it), so the function keeps
its input in the format it came in and converts only what a pass needs.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .ttt_fast import _autocast_dtype

_CL = torch.channels_last


class Conv2dFunction(torch.autograd.Function):
    """``conv2d(x, weight, bias, stride, padding, groups=1)`` -> a
    channels-last map. A 1x1 convolution (stride 1, no padding) runs as a
    linear layer over the channels-last tokens; a larger kernel runs its
    forward and input gradient channels-last and its weight gradient as an
    im2col matrix product."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        pointwise = weight.shape[-2:] == (1, 1) and stride == 1 and padding == 0
        x_cl = x.contiguous(memory_format=_CL)
        ctx.meta = (stride, padding, pointwise)
        if pointwise:
            b, c, h, w = x.shape
            tokens = x_cl.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view
            out = F.linear(tokens, weight.flatten(1), bias)  # (B h w, Cout)
            ctx.save_for_backward(x_cl, weight)
            return out.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, Cout, h, w) channels-last
        # keep x as it came: im2col (unfold) is fastest on NCHW
        ctx.save_for_backward(x, weight)
        return F.conv2d(x_cl, weight.contiguous(memory_format=_CL), bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, pointwise = ctx.meta
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad = grad.contiguous(memory_format=_CL)
        d_x = d_w = d_b = None
        if pointwise:
            b, c, h, w = x.shape
            g = grad.permute(0, 2, 3, 1).reshape(b * h * w, -1)  # (B h w, Cout), a view
            if need_x:
                d_x = (g @ weight.flatten(1)).view(b, h, w, c).permute(0, 3, 1, 2)
            if need_w:
                tokens = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
                d_w = (g.t() @ tokens).view_as(weight)
            if need_b:
                d_b = g.sum(0)
            return d_x, d_w, d_b, None, None
        args = ([stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1)
        if need_x:  # only the input's shape and format are read
            like_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_CL)
            d_x = torch.ops.aten.convolution_backward(
                grad, like_x, weight.contiguous(memory_format=_CL), None, *args,
                [True, False, False])[0]
        if need_w:
            # im2col and one product: no NCHW copy of the gradient needed
            b, cout, oh, ow = grad.shape
            cols = F.unfold(x, weight.shape[-2:], padding=padding,
                            stride=stride)  # (B, Cin k k, oh ow)
            g = grad.permute(0, 2, 3, 1).reshape(b, oh * ow, cout)  # a view
            d_w = (cols @ g).sum(0).t().reshape(weight.shape)  # (Cout, Cin, k, k)
        if need_b:
            d_b = grad.sum((0, 2, 3))
        return d_x, d_w, d_b, None, None


def conv2d_fast(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                stride: int, padding: int) -> torch.Tensor:
    """An ungrouped convolution with square stride and padding through
    :class:`Conv2dFunction`, in the dtype autocast would give it (or ``x``'s
    without autocast)."""
    dtype = _autocast_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return Conv2dFunction.apply(x.to(dtype), weight.to(dtype),
                                    None if bias is None else bias.to(dtype),
                                    stride, padding)


def conv_args(conv: torch.nn.Conv2d) -> Tuple[int, int]:
    """``(stride, padding)`` of a convolution :func:`conv2d_fast` can run
    (ungrouped, undilated, square stride and padding, zero padding mode), or
    raise ``ValueError``."""
    stride, padding = conv.stride, conv.padding
    if (conv.groups != 1 or conv.dilation != (1, 1) or stride[0] != stride[1]
            or isinstance(padding, str) or padding[0] != padding[1]
            or conv.padding_mode != 'zeros'):
        raise ValueError(f'conv2d_fast cannot run {conv}')
    return stride[0], padding[0]
