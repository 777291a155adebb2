# Copyright (c) mmvit3 authors. All rights reserved.
"""Fused custom ops for the ViT³ block around its mixer, each with its
gradient as a second op:

* ``mmvit3::mlp_tail``: the H-ViT³ MLP after ``fc1``,
  ``fc2(gelu(a + dwc(a)))`` with ``a = gelu(fc1(x))``; keeps ``fc1(x)`` only
  for backward (plain autograd keeps four hidden-width tensors);
* ``mmvit3::layer_norm_linear``: ``linear(layer_norm(x))`` (``norm1 -> qkv``,
  ``norm2 -> fc1``); keeps ``x`` and the per-token mean and 1/std, not the
  normalised tokens.

Feature maps are channels-last views of the ``(B, N, C)`` tokens: no layout
copies around the depth-wise convolution.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import autocast_dtype, autocast_off, grid, tokens, with_standard_strides
from .linear_cpu import linear


# ---------------------------------------------------------------------------
# The MLP's tail
# ---------------------------------------------------------------------------
def _middle(x: Tensor, weight: Tensor, bias: Tensor, h: int, w: int):
    """``a = gelu(x)`` as a channels-last map and ``u = a + dwc(a)`` tokens."""
    a = F.gelu(x)
    a_grid = grid(a, (h, w))  # (B, Ch, h, w) channels-last view
    u = tokens(F.conv2d(a_grid, weight, bias, padding=1,
                        groups=weight.shape[0])).add_(a)  # (B, N, Ch)
    return a_grid, u


@torch.library.custom_op('mmvit3::mlp_tail', mutates_args=())
def _mlp_tail(x: Tensor, weight: Tensor, bias: Tensor, fc2_weight: Tensor, fc2_bias: Tensor,
              h: int, w: int) -> Tensor:
    """``x`` (B, N, Ch) -> ``fc2(gelu(a + dwc(a)))``, ``a = gelu(x)`` (B, N, C)."""
    _, u = _middle(x, weight, bias, h, w)
    g = torch.ops.aten.gelu.out(u, out=u)  # in place: u is not needed again
    return linear(g, fc2_weight, fc2_bias)


@_mlp_tail.register_fake
def _(x, weight, bias, fc2_weight, fc2_bias, h, w):
    return x.new_empty(x.shape[:-1] + fc2_weight.shape[:1])


@torch.library.custom_op('mmvit3::mlp_tail_backward', mutates_args=())
def _mlp_tail_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor,
                       fc2_weight: Tensor, h: int,
                       w: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of ``mmvit3::mlp_tail`` for ``x``, the depth-wise weight and
    bias, ``fc2``'s weight and bias."""
    grad = grad.contiguous()  # (B, N, C)
    a_grid, u = _middle(x, weight, bias, h, w)
    g = F.gelu(u)  # fc2's input, recomputed
    d_fc2_weight = grad.flatten(0, 1).t() @ g.flatten(0, 1)  # (C, Ch)
    d_fc2_bias = grad.sum((0, 1))
    du = torch.matmul(grad, fc2_weight, out=g)  # g's buffer, (B, N, Ch)
    torch.ops.aten.gelu_backward.grad_input(du, u, grad_input=du)
    channels = weight.shape[0]
    d_a, d_weight, d_bias = torch.ops.aten.convolution_backward(
        grid(du, (h, w)), a_grid, weight, [channels], [1, 1], [1, 1], [1, 1], False,
        [0, 0], channels, [True, True, True])
    d_x = du.add_(tokens(d_a))
    del d_a
    torch.ops.aten.gelu_backward.grad_input(d_x, x, grad_input=d_x)
    return d_x, with_standard_strides(d_weight), d_bias, d_fc2_weight, d_fc2_bias


@_mlp_tail_backward.register_fake
def _(grad, x, weight, bias, fc2_weight, h, w):
    return (torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias),
            torch.empty_like(fc2_weight), grad.new_empty(fc2_weight.shape[:1]))


def _mlp_tail_setup(ctx, inputs, output):
    x, weight, bias, fc2_weight, _, h, w = inputs
    ctx.save_for_backward(x, weight, bias, fc2_weight)
    ctx.hw = (h, w)


def _mlp_tail_grad(ctx, grad):
    grads = torch.ops.mmvit3.mlp_tail_backward(grad, *ctx.saved_tensors, *ctx.hw)
    return (*grads, None, None)


_mlp_tail.register_autograd(_mlp_tail_grad, setup_context=_mlp_tail_setup)


def mlp_tail(x: Tensor, dw_weight: Tensor, dw_bias: Tensor, fc2_weight: Tensor,
             fc2_bias: Tensor, hw_shape) -> Tensor:
    """``fc2(gelu(a + dwc(a)))``, ``a = gelu(x)``, through ``mmvit3::mlp_tail``
    in the dtype autocast would give its convolution and linear layer (the
    weights cast to it, as autocast does), or in ``x``'s dtype."""
    dtype = autocast_dtype(x)
    with autocast_off(x):
        return torch.ops.mmvit3.mlp_tail(
            x.to(dtype).contiguous(), dw_weight.to(dtype), dw_bias.to(dtype),
            fc2_weight.to(dtype), fc2_bias.to(dtype), hw_shape[0], hw_shape[1])


# ---------------------------------------------------------------------------
# LayerNorm -> Linear
# ---------------------------------------------------------------------------
@torch.library.custom_op('mmvit3::layer_norm_linear', mutates_args=())
def _layer_norm_linear(x: Tensor, norm_weight: Tensor, norm_bias: Tensor, eps: float,
                       weight: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``linear(layer_norm(x))`` (the norm in ``x``'s dtype, the linear layer
    in ``weight``'s), and the norm's per-token mean and 1/std."""
    y, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)
    return linear(y.to(weight.dtype), weight, bias), mean, rstd


@_layer_norm_linear.register_fake
def _(x, norm_weight, norm_bias, eps, weight, bias):
    stats = x.shape[:-1] + (1, )
    return (x.new_empty(x.shape[:-1] + weight.shape[:1], dtype=weight.dtype),
            x.new_empty(stats), x.new_empty(stats))


@torch.library.custom_op('mmvit3::layer_norm_linear_backward', mutates_args=())
def _layer_norm_linear_backward(grad: Tensor, x: Tensor, norm_weight: Tensor,
                                norm_bias: Tensor, mean: Tensor, rstd: Tensor,
                                weight: Tensor,
                                eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of ``mmvit3::layer_norm_linear``'s first output for ``x``,
    the norm's weight and bias and the linear layer's weight and bias."""
    grad = grad.contiguous()
    y = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)[0]
    d_weight = grad.flatten(0, -2).t() @ y.to(grad.dtype).flatten(0, -2)  # (out, C)
    d_bias = grad.flatten(0, -2).sum(0)
    del y
    d_y = linear(grad, weight.t()).to(x.dtype)  # grad @ weight, (..., C)
    d_x, d_norm_weight, d_norm_bias = torch.ops.aten.native_layer_norm_backward(
        d_y, x, x.shape[-1:], mean, rstd, norm_weight, norm_bias, [True, True, True])
    return d_x, d_norm_weight, d_norm_bias, d_weight, d_bias


@_layer_norm_linear_backward.register_fake
def _(grad, x, norm_weight, norm_bias, mean, rstd, weight, eps):
    return (torch.empty_like(x), torch.empty_like(norm_weight), torch.empty_like(norm_bias),
            torch.empty_like(weight), grad.new_empty(weight.shape[:1]))


def _lnl_setup(ctx, inputs, output):
    x, norm_weight, norm_bias, eps, weight, _ = inputs
    ctx.save_for_backward(x, norm_weight, norm_bias, output[1], output[2], weight)
    ctx.eps = eps


def _lnl_grad(ctx, grad, *unused):
    d_x, d_nw, d_nb, d_w, d_b = torch.ops.mmvit3.layer_norm_linear_backward(
        grad, *ctx.saved_tensors, ctx.eps)
    return d_x, d_nw, d_nb, None, d_w, d_b


_layer_norm_linear.register_autograd(_lnl_grad, setup_context=_lnl_setup)


def layer_norm_linear(x: Tensor, norm_weight: Tensor, norm_bias: Tensor, eps: float,
                      weight: Tensor, bias: Tensor) -> Tensor:
    """``linear(layer_norm(x))`` through ``mmvit3::layer_norm_linear``: the
    norm in ``x``'s dtype (float32 under autocast, as autocast runs
    layer_norm), the linear layer in autocast's dtype."""
    dtype = autocast_dtype(x)
    with autocast_off(x):
        return torch.ops.mmvit3.layer_norm_linear(x.contiguous(), norm_weight, norm_bias,
                                                  float(eps), weight.to(dtype),
                                                  bias.to(dtype))[0]
