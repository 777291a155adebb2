# Copyright (c) mmvit3 authors. All rights reserved.
"""Helpers the fused kernels share: token/grid views, the autocast dtype,
standard-strided weight gradients, the ReLU's gradient, and the convolution
ops' saved inputs and calls."""
import contextlib
from typing import ContextManager, Optional, Tuple

import torch

HWShape = Tuple[int, int]


def grid(x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """(B, N, c) tokens -> (B, c, h, w) channels-last feature map (a view if
    ``x`` is contiguous)."""
    b, _, c = x.shape
    return x.reshape(b, hw_shape[0], hw_shape[1], c).permute(0, 3, 1, 2)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, c, h, w) channels-last feature map -> (B, N, c) tokens (a view)."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(b, -1, c)


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast runs matmuls and convolutions in for ``x``'s
    device, or ``x``'s own dtype where autocast is off (or the device has
    none, as ``meta``)."""
    device = x.device.type
    try:
        if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4
            enabled, dtype = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
        elif device == 'cpu':
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    except RuntimeError:  # a device type autocast does not know
        return x.dtype
    return dtype if enabled else x.dtype


def autocast_off(x: torch.Tensor) -> ContextManager:
    """Autocast switched off for ``x``'s device inside the block (nothing to
    switch off on a device autocast does not know, as ``meta``)."""
    try:
        return torch.autocast(x.device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def with_standard_strides(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` with the standard (contiguous) strides of its shape.

    A depth-wise convolution on a channels-last map returns its weight
    gradient channels-last (oneDNN: strides ``(9, 1, 3, 1)`` for a
    ``(C, 1, 3, 3)`` weight). ``is_contiguous()`` ignores the size-1 dim, but
    DDP's gradient buckets do not: they warn and copy it every step."""
    step, strides = 1, []
    for size in reversed(grad.shape):
        strides.insert(0, step)
        step *= max(size, 1)
    if grad.stride() == tuple(strides):
        return grad
    return grad.clone(memory_format=torch.contiguous_format)


def relu_backward(grad: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    """The gradient before a ReLU whose output was ``out`` (``grad`` itself
    when ``out`` is None: no ReLU)."""
    return grad if out is None else torch.ops.aten.threshold_backward(grad, out, 0.)


def conv_setup_context(ctx, inputs, output) -> None:
    """``setup_context`` of the convolution ops ``(x, weight, bias, stride,
    padding, relu)``: keeps ``x``, the weight and, after a ReLU, the output
    (its gradient's mask)."""
    x, weight, bias, stride, padding, relu = inputs
    ctx.save_for_backward(x, weight, output if relu else None)
    ctx.meta = (stride, padding, bias is not None)


def call_conv_op(op, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 stride: int, padding: int, relu: bool) -> torch.Tensor:
    """A convolution op ``(x, weight, bias, stride, padding, relu)`` in the
    dtype autocast would give a convolution (or ``x``'s without autocast),
    with autocast off inside."""
    dtype = autocast_dtype(x)
    with autocast_off(x):
        return op(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                  stride, padding, relu)
