# Copyright (c) mmvit3 authors. All rights reserved.
"""Fast, memory-lean paths for the ViT³ block: custom autograd functions
that keep only their inputs for backward and recompute the cheap
intermediates there.

* :class:`TTTInnerFunction`: from the ``qkv`` projection to the input of
  ``proj`` (RoPE, both inner modules' closed-form steps and their
  application). Plain autograd keeps about twenty ``(B, N, C)`` intermediates
  per block; this keeps the ``qkv`` output and a few ``d x d`` matrices.
* :class:`MlpTailFunction`: the block's MLP after ``fc1``,
  ``fc2(gelu(a + dwc(a)))`` with ``a = gelu(fc1(x))``; keeps ``fc1(x)`` only.
* :class:`LayerNormLinearFunction`: ``norm1 -> qkv`` and ``norm2 -> fc1``;
  keeps the norm's input, not its output.

Both compute exactly what :mod:`mmvit3.models.ttt` and the plain block
compute (the tests compare outputs and every gradient). Feature maps are
channels-last views of the ``(B, N, C)`` tokens, so no layout copies are made
around the convolutions.

Shapes: ``B`` samples, ``N = h * w`` tokens, ``C`` channels, ``H`` heads of
``d`` channels.
"""
from functools import lru_cache
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .rope import rope_2d_cos_sin

HWShape = Tuple[int, int]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _rope_rotations(h: int, w: int, channels: int, heads: int,
                    device: torch.device) -> torch.Tensor:
    """``exp(i * angle)`` per head, token and channel pair, ``(H, N, d/2)``
    complex64 (head ``i`` holds channel pairs ``i d/2 ... (i+1) d/2 - 1``)."""
    cos, sin = rope_2d_cos_sin((h, w), channels, device=device)  # (N, C/2) each
    rot = torch.complex(cos, sin)  # (N, C/2)
    return rot.view(h * w, heads, -1).transpose(0, 1).contiguous()  # (H, N, d/2)


def _pairs(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*d) tokens, last dim contiguous -> (B, H, N, d/2) complex view
    of their channel pairs."""
    d = x.shape[-1] // heads
    return torch.view_as_complex(x.unflatten(-1, (heads, d // 2, 2))).transpose(1, 2)


def _rotate_to_heads(x: torch.Tensor, rot: torch.Tensor, heads: int) -> torch.Tensor:
    """2D RoPE of ``x`` (B, N, H*d) as one complex multiplication by ``rot``
    (H, N, d/2), written as contiguous heads (B, H, N, d): per-head matrix
    products on strided heads are about 2.5x slower on CPU."""
    b, n, c = x.shape
    out = x.new_empty(b, heads, n, c // heads)
    torch.mul(_pairs(x, heads), rot,
              out=torch.view_as_complex(out.view(b, heads, n, -1, 2)))
    return out


def _rotate_from_heads(x: torch.Tensor, rot: torch.Tensor, out: torch.Tensor) -> None:
    """Undo :func:`_rotate_to_heads`: rotate ``x`` (B, H, N, d) by
    ``rot.conj()`` into the tokens ``out`` (B, N, H*d), in place."""
    b, heads, n, d = x.shape
    torch.mul(torch.view_as_complex(x.view(b, heads, n, d // 2, 2)), rot.conj(),
              out=_pairs(out, heads))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*d) -> (B, H, N, d), a view."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _silu_grad(z: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """silu'(z) = sig * (1 + z * (1 - sig))."""
    return (1 - sig).mul_(z).add_(1).mul_(sig)


def _swiglu_grad_(y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``y = [y1, y2]`` (last dim ``2d``) -> ``[m silu(y2), m y1 silu'(y2)]``,
    the gradient of ``<m, y1 silu(y2)>`` with respect to ``y``, written in
    ``y``'s buffer (``silu'(y2)`` times the product in one pass)."""
    d = y.shape[-1] // 2
    y1, y2 = y[..., :d], y[..., d:]
    y1_m = y1 * m
    torch.ops.aten.silu.out(y2, out=y1).mul_(m)
    torch.ops.aten.silu_backward.grad_input(y1_m, y2, grad_input=y2)
    return y


def _col_normalize(g: torch.Tensor, dim) -> Tuple[torch.Tensor, torch.Tensor]:
    """``g / (||g|| + 1)`` over ``dim``; also returns the norm."""
    norm = torch.linalg.vector_norm(g, dim=dim, keepdim=True)
    return g / (norm + 1), norm


def _col_normalize_backward(g: torch.Tensor, norm: torch.Tensor,
                            grad: torch.Tensor, dim) -> torch.Tensor:
    """Gradient through ``g / (||g|| + 1)``; a zero column has gradient
    ``grad / 1`` (the norm's subgradient 0 at 0, as autograd takes it)."""
    inner = (grad * g).sum(dim=dim, keepdim=True)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    coef = torch.where(norm > 0, inner / ((norm + 1)**2 * safe), torch.zeros_like(norm))
    return grad / (norm + 1) - g * coef


def _grid(x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """(B, N, c) tokens -> (B, c, h, w) channels-last feature map (a view if
    ``x`` is contiguous)."""
    b, n, c = x.shape
    return x.reshape(b, hw_shape[0], hw_shape[1], c).permute(0, 3, 1, 2)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, c, h, w) channels-last feature map -> (B, N, c) tokens (a view)."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(b, -1, c)


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast runs matmuls and convolutions in for ``x``'s
    device, or ``x``'s own dtype where autocast is off."""
    device = x.device.type
    if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4
        enabled, dtype = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    elif device == 'cpu':
        enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    else:
        enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return dtype if enabled else x.dtype


def _dwconv_per_sample(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """3x3 depth-wise conv, zero padding 1, a kernel per sample:
    x (B, c, h, w), weight (B, c, 3, 3) -> (B, c, h, w) in x's memory format.

    One convolution per sample: the samples side by side as ``B*c``
    channels of one convolution would need an NCHW copy of a channels-last
    ``x`` and give an NCHW result, 3x slower on CPU at batch 2."""
    c = x.shape[1]
    if x.shape[0] == 1:
        return F.conv2d(x, weight.view(c, 1, 3, 3), padding=1, groups=c)
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        out[i:i + 1] = F.conv2d(x[i:i + 1], weight[i].view(c, 1, 3, 3), padding=1, groups=c)
    return out


def _window_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``out[n, c, i, j] = sum_(y,x) apad[n, c, y+i, x+j] * b[n, c, y, x]``
    (zero padding 1): (B, c, h, w) x2 -> (B, c, 3, 3).

    Nine products of shifted views, each summed: in either memory format
    this is several times faster than ``einsum`` (which copies per channel
    for channels-last maps) and sums more accurately than a depth-wise
    convolution's weight gradient."""
    h, w = a.shape[-2:]
    a_pad = F.pad(a, (1, 1, 1, 1))  # (B, c, h + 2, w + 2)
    prod = torch.empty_like(b)  # one buffer for the nine products
    out = b.new_empty(b.shape[:2] + (9, ))  # (B, c, 9)
    for k in range(9):
        i, j = divmod(k, 3)
        torch.sum(torch.mul(a_pad[:, :, i:i + h, j:j + w], b, out=prod), (-2, -1),
                  out=out[..., k])
    return out.unflatten(-1, (3, 3))


# ---------------------------------------------------------------------------
# The mixer's inner part
# ---------------------------------------------------------------------------
class TTTInnerFunction(torch.autograd.Function):
    """``qkv`` (B, N, 3C + 3d) -> ``concat(out1, out2)`` (B, N, C + d): RoPE,
    one closed-form step of each inner module and their application
    (spec §1), in float32."""

    @staticmethod
    def forward(ctx, qkv, w1, w2, w3, hw_shape, num_heads, scale, lr):
        b, n, total = qkv.shape
        d = w3.shape[0]
        c = (total - 3 * d) // 3
        h, w = hw_shape
        rot = _rope_rotations(h, w, c, num_heads, qkv.device)  # (H, N, d/2)
        w12 = torch.cat([w1, w2], dim=-1)  # (1, H, d, 2d)

        # Inner module 1
        qh, kh, vh = TTTInnerFunction._swiglu_inputs(qkv, rot, c, num_heads)
        coef = -scale / n
        # --- Forward ---
        z = kh @ w12  # (B, H, N, 2d)
        # --- Backward ---  p = dL/dz / coef = [silu(z2) v, silu'(z2) z1 v], in z's buffer
        p = _swiglu_grad_(z, vh)
        g = (kh.transpose(-2, -1) @ p).mul_(coef)  # (B, H, d, 2d)
        del z, p
        # --- Step ---
        g_hat, g_norm = _col_normalize(g, dim=-2)
        w12_new = w12 - lr * g_hat  # (B, H, d, 2d)
        y = qh @ w12_new  # (B, H, N, 2d)
        out = qkv.new_empty(b, n, c + d)
        torch.mul(y[..., :d], F.silu(y[..., d:], inplace=True),
                  out=_heads(out[..., :c], num_heads))  # out1, heads merged
        del y

        # Inner module 2
        q2, k2, v2 = TTTInnerFunction._dwconv_inputs(qkv, hw_shape, c, d)
        coef3 = -scale / (h * w)
        g3 = _window_products(k2, v2).mul_(coef3)  # (B, d, 3, 3)
        g3_hat, g3_norm = _col_normalize(g3, dim=(-2, -1))
        w3_new = w3.reshape(1, d, 3, 3) - lr * g3_hat  # (B, d, 3, 3)
        out[..., c:] = _tokens(_dwconv_per_sample(q2, w3_new))

        ctx.save_for_backward(qkv, w12, w3, g, g_norm, w12_new, g3, g3_norm, w3_new)
        ctx.meta = (hw_shape, num_heads, scale, lr, c, d)
        return out

    @staticmethod
    def _swiglu_inputs(qkv, rot, c, heads):
        q1, k1, v1 = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:3 * c]
        qh = _rotate_to_heads(q1, rot, heads)  # (B, H, N, d), contiguous
        kh = _rotate_to_heads(k1, rot, heads)
        return qh, kh, _heads(v1, heads)  # v: a strided view

    @staticmethod
    def _dwconv_inputs(qkv, hw_shape, c, d):
        # (B, N, d) slices -> (B, d, h, w) channels-last copies
        return tuple(_grid(qkv[..., 3 * c + i * d:3 * c + (i + 1) * d].contiguous(), hw_shape)
                     for i in range(3))

    @staticmethod
    def backward(ctx, grad_out):
        qkv, w12, w3, g, g_norm, w12_new, g3, g3_norm, w3_new = ctx.saved_tensors
        hw_shape, heads, scale, lr, c, d = ctx.meta
        b, n, _ = qkv.shape
        h, w = hw_shape
        rot = _rope_rotations(h, w, c, heads, qkv.device)  # (H, N, d/2)
        grad_out = grad_out.contiguous()
        grad_qkv = torch.empty_like(qkv)

        # ---- inner module 1 ----
        qh, kh, vh = TTTInnerFunction._swiglu_inputs(qkv, rot, c, heads)
        coef = -scale / n
        d_out1 = _heads(grad_out[..., :c], heads)  # (B, H, N, d)
        y = qh @ w12_new  # recomputed, (B, H, N, 2d)
        # dy = [d_out1 silu(y2), d_out1 y1 silu'(y2)], written into y's buffer
        dy = _swiglu_grad_(y, d_out1)
        dq = dy @ w12_new.transpose(-2, -1)  # (B, H, N, d)
        d_w12_new = qh.transpose(-2, -1) @ dy  # (B, H, d, 2d)
        del dy, y
        d_w12 = d_w12_new.sum(0, keepdim=True)
        dg = _col_normalize_backward(g, g_norm, d_w12_new.mul_(-lr), dim=-2)  # (B, H, d, 2d)

        z = kh @ w12  # recomputed, (B, H, N, 2d)
        z1, z2 = z[..., :d], z[..., d:]
        sig = torch.sigmoid(z2)
        a = z2 * sig  # silu(z2)
        sp = _silu_grad(z2, sig)  # silu'(z2)
        # silu''(z2) = sig (1 - sig) (2 + z2 (1 - 2 sig)), in z2's place
        t = torch.mul(sig, -2).add_(1)
        z2.mul_(t).add_(2)
        torch.mul(sig, -1, out=t).add_(1).mul_(sig)
        spp = z2.mul_(t)
        del t, sig
        p = torch.empty_like(z)  # dL/dz / coef = [silu(z2) v, silu'(z2) z1 v]
        torch.mul(a, vh, out=p[..., :d])
        torch.mul(sp, z1, out=p[..., d:]).mul_(vh)
        dk = (p @ dg.transpose(-2, -1)).mul_(coef)  # (B, H, N, d)
        del p
        dp = (kh @ dg).mul_(coef)  # (B, H, N, 2d)
        dp1, dp2 = dp[..., :d], dp[..., d:]
        dp2_z1 = dp2 * z1
        dv = torch.mul(dp1, a).addcmul_(dp2_z1, sp)  # (B, H, N, d)
        # dz = [dp2 v silu'(z2), (dp1 silu'(z2) + dp2 z1 silu''(z2)) v], in z's buffer
        spp.mul_(dp2_z1).addcmul_(dp1, sp).mul_(vh)
        torch.mul(dp2, vh, out=z1).mul_(sp)
        dz = z
        del dp, dp1, dp2, dp2_z1, a, sp, spp, z1, z2
        dk += dz @ w12.transpose(-2, -1)
        d_w12 += (kh.transpose(-2, -1) @ dz).sum(0, keepdim=True)
        del dz, z
        _rotate_from_heads(dq, rot, grad_qkv[..., :c])
        _rotate_from_heads(dk, rot, grad_qkv[..., c:2 * c])
        _heads(grad_qkv[..., 2 * c:3 * c], heads).copy_(dv)

        # ---- inner module 2 ----
        q2, k2, v2 = TTTInnerFunction._dwconv_inputs(qkv, hw_shape, c, d)
        coef3 = -scale / (h * w)
        d_out2 = _grid(grad_out[..., c:].contiguous(), hw_shape)  # (B, d, h, w)
        flip = lambda t: t.flip(-2, -1)  # noqa: E731
        d_q2 = _dwconv_per_sample(d_out2, flip(w3_new))
        d_w3_new = _window_products(q2, d_out2)  # (B, d, 3, 3)
        d_w3 = d_w3_new.sum(0).unsqueeze(1)  # (d, 1, 3, 3)
        dg3 = _col_normalize_backward(g3, g3_norm, d_w3_new.mul_(-lr), dim=(-2, -1))
        d_k2 = _dwconv_per_sample(v2, flip(dg3)).mul_(coef3)
        d_v2 = _dwconv_per_sample(k2, dg3).mul_(coef3)
        for i, t in enumerate((d_q2, d_k2, d_v2)):
            grad_qkv[..., 3 * c + i * d:3 * c + (i + 1) * d] = _tokens(t)

        return grad_qkv, d_w12[..., :d], d_w12[..., d:], d_w3, None, None, None, None


def ttt_inner_fast(qkv: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                   w3: torch.Tensor, hw_shape: HWShape, num_heads: int,
                   scale: float, lr: float) -> torch.Tensor:
    """Run :class:`TTTInnerFunction` in float32 or float64, never lower (also
    under autocast: the inner step would lose its update in half precision);
    the result has ``qkv``'s dtype."""
    dtype = qkv.dtype if qkv.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(qkv.device.type, enabled=False):
        out = TTTInnerFunction.apply(qkv.to(dtype).contiguous(), w1.to(dtype), w2.to(dtype),
                                     w3.to(dtype), tuple(hw_shape), num_heads, scale, lr)
    return out.to(qkv.dtype)


# ---------------------------------------------------------------------------
# The MLP's tail
# ---------------------------------------------------------------------------
class MlpTailFunction(torch.autograd.Function):
    """``h`` (B, N, Ch) -> ``fc2(gelu(a + dwc(a)))`` with ``a = gelu(h)``
    (B, N, C): the block's MLP after ``fc1``. Keeps only ``h`` for backward
    and recomputes ``a``, ``dwc(a)`` and the input of ``fc2`` there (plain
    autograd keeps four ``(B, N, Ch)`` tensors)."""

    @staticmethod
    def _middle(x, weight, bias, hw_shape):
        a = F.gelu(x)
        a_grid = _grid(a, hw_shape)  # (B, Ch, h, w) channels-last view
        u = _tokens(F.conv2d(a_grid, weight, bias, padding=1,
                             groups=weight.shape[0])).add_(a)  # (B, N, Ch)
        return a_grid, u

    @staticmethod
    def forward(ctx, x, weight, bias, fc2_weight, fc2_bias, hw_shape):
        x = x.contiguous()
        _, u = MlpTailFunction._middle(x, weight, bias, hw_shape)
        ctx.save_for_backward(x, weight, bias, fc2_weight)
        ctx.hw_shape = hw_shape
        ctx.has_fc2_bias = fc2_bias is not None
        g = torch.ops.aten.gelu.out(u, out=u)  # in place: u is not needed again
        return F.linear(g, fc2_weight, fc2_bias)  # (B, N, C)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, fc2_weight = ctx.saved_tensors
        hw_shape = ctx.hw_shape
        grad = grad.contiguous()  # (B, N, C)
        a_grid, u = MlpTailFunction._middle(x, weight, bias, hw_shape)
        g = F.gelu(u)  # fc2's input, recomputed
        d_fc2_weight = grad.flatten(0, 1).t() @ g.flatten(0, 1)  # (C, Ch)
        d_fc2_bias = grad.sum((0, 1)) if ctx.has_fc2_bias else None
        du = torch.matmul(grad, fc2_weight, out=g)  # g's buffer, (B, N, Ch)
        torch.ops.aten.gelu_backward.grad_input(du, u, grad_input=du)
        channels = weight.shape[0]
        d_a, d_weight, d_bias = torch.ops.aten.convolution_backward(
            _grid(du, hw_shape), a_grid, weight,
            None if bias is None else [channels], [1, 1], [1, 1], [1, 1], False,
            [0, 0], channels, [True, True, bias is not None])
        d_x = du.add_(_tokens(d_a))
        del d_a
        torch.ops.aten.gelu_backward.grad_input(d_x, x, grad_input=d_x)
        return d_x, d_weight, d_bias, d_fc2_weight, d_fc2_bias, None


def mlp_tail_fast(x: torch.Tensor, dwc_weight: torch.Tensor,
                  dwc_bias: Optional[torch.Tensor], fc2_weight: torch.Tensor,
                  fc2_bias: Optional[torch.Tensor], hw_shape: HWShape) -> torch.Tensor:
    """Run :class:`MlpTailFunction` in the dtype autocast would give its
    convolution and linear layer (the weights cast to it, as autocast does),
    or in ``x``'s dtype without autocast."""
    dtype = _autocast_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return MlpTailFunction.apply(
            x.to(dtype), dwc_weight.to(dtype),
            None if dwc_bias is None else dwc_bias.to(dtype), fc2_weight.to(dtype),
            None if fc2_bias is None else fc2_bias.to(dtype), tuple(hw_shape))


# ---------------------------------------------------------------------------
# LayerNorm -> Linear
# ---------------------------------------------------------------------------
class LayerNormLinearFunction(torch.autograd.Function):
    """``linear(layer_norm(x))`` that keeps ``x`` (and the per-token mean and
    1/std) for backward instead of the normalised tokens, and recomputes them
    there. The norm runs in ``x``'s dtype, the linear layer in ``dtype``."""

    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, weight, bias, dtype):
        x = x.contiguous()
        y, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)
        ctx.save_for_backward(x, norm_weight, norm_bias, mean, rstd, weight)
        ctx.meta = (eps, bias is not None)
        return F.linear(y.to(dtype), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, norm_weight, norm_bias, mean, rstd, weight = ctx.saved_tensors
        eps, has_bias = ctx.meta
        grad = grad.contiguous()
        y = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)[0]
        d_weight = grad.flatten(0, -2).t() @ y.to(grad.dtype).flatten(0, -2)  # (out, C)
        d_bias = grad.flatten(0, -2).sum(0) if has_bias else None
        del y
        d_y = (grad @ weight).to(x.dtype)  # (..., C)
        d_x, d_norm_weight, d_norm_bias = torch.ops.aten.native_layer_norm_backward(
            d_y, x, x.shape[-1:], mean, rstd, norm_weight, norm_bias,
            [True, norm_weight is not None, norm_bias is not None])
        return d_x, d_norm_weight, d_norm_bias, None, d_weight, d_bias, None


def layer_norm_linear(x: torch.Tensor, norm: torch.nn.LayerNorm,
                      linear: torch.nn.Linear) -> torch.Tensor:
    """``linear(norm(x))`` through :class:`LayerNormLinearFunction`: the norm
    in ``x``'s dtype (float32 under autocast, as autocast runs layer_norm),
    the linear layer in autocast's dtype."""
    dtype = _autocast_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return LayerNormLinearFunction.apply(
            x, norm.weight, norm.bias, norm.eps, linear.weight.to(dtype),
            None if linear.bias is None else linear.bias.to(dtype), dtype)
