# Copyright (c) mmvit3 authors. All rights reserved.
"""The TTT mixer's inner part as one fused custom op, ``mmvit3::ttt_inner``:
from the ``qkv`` projection to the input of ``proj`` (2D RoPE, one
closed-form step of each inner module and their application to the
queries), with its gradient as a second op, ``mmvit3::ttt_inner_backward``.

Plain autograd keeps about twenty ``(B, N, C)`` intermediates per layer for
backward; this keeps ``qkv`` and a few ``d x d`` matrices and recomputes the
rest. It runs in float32 (float64 stays float64), also under autocast: in
half precision the one-step update is lost in rounding.

Shapes: ``B`` samples, ``N = h * w`` tokens, ``C`` channels in ``H`` heads of
``d``; inner module 2 has ``d`` channels.
"""
from functools import lru_cache
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import autocast_off, grid, tokens
from .rope import rope_2d_cos_sin


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _rope_rotations(h: int, w: int, channels: int, heads: int,
                    device: torch.device) -> Tensor:
    """``exp(i * angle)`` per head, token and channel pair, ``(H, N, d/2)``
    complex64 (head ``i`` holds channel pairs ``i d/2 ... (i+1) d/2 - 1``)."""
    cos, sin = rope_2d_cos_sin((h, w), channels, device=device)  # (N, C/2) each
    rot = torch.complex(cos, sin)  # (N, C/2)
    return rot.view(h * w, heads, -1).transpose(0, 1).contiguous()  # (H, N, d/2)


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, H*d) -> (B, H, N, d), a view."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _pairs(x: Tensor, heads: int) -> Tensor:
    """(B, N, H*d) tokens, last dim contiguous -> (B, H, N, d/2) complex view
    of their channel pairs."""
    d = x.shape[-1] // heads
    return torch.view_as_complex(x.unflatten(-1, (heads, d // 2, 2))).transpose(1, 2)


def _to_heads(x: Tensor, rot: Optional[Tensor], heads: int) -> Tensor:
    """(B, N, H*d) -> contiguous heads (B, H, N, d), rotated by ``rot``
    (2D RoPE as one complex multiplication) unless it is None. Per-head
    matrix products on strided heads are about 2.5x slower on CPU."""
    if rot is None:
        return _heads(x, heads).contiguous()
    b, n, c = x.shape
    out = x.new_empty(b, heads, n, c // heads)
    torch.mul(_pairs(x, heads), rot, out=torch.view_as_complex(out.view(b, heads, n, -1, 2)))
    return out


def _from_heads(x: Tensor, rot: Optional[Tensor], out: Tensor) -> None:
    """Undo :func:`_to_heads`: ``x`` (B, H, N, d), rotated back by
    ``rot.conj()``, into the tokens ``out`` (B, N, H*d)."""
    b, heads, n, d = x.shape
    if rot is None:
        _heads(out, heads).copy_(x)
    else:
        torch.mul(torch.view_as_complex(x.view(b, heads, n, d // 2, 2)), rot.conj(),
                  out=_pairs(out, heads))


def _silu_grad(z: Tensor, sig: Tensor) -> Tensor:
    """silu'(z) = sig * (1 + z * (1 - sig))."""
    return (1 - sig).mul_(z).add_(1).mul_(sig)


def _swiglu_grad_(y: Tensor, m: Tensor) -> Tensor:
    """``y = [y1, y2]`` (last dim ``2d``) -> ``[m silu(y2), m y1 silu'(y2)]``,
    the gradient of ``<m, y1 silu(y2)>`` with respect to ``y``, written in
    ``y``'s buffer (``silu'(y2)`` times the product in one pass)."""
    d = y.shape[-1] // 2
    y1, y2 = y[..., :d], y[..., d:]
    y1_m = y1 * m
    torch.ops.aten.silu.out(y2, out=y1).mul_(m)
    torch.ops.aten.silu_backward.grad_input(y1_m, y2, grad_input=y2)
    return y


def _col_normalize(g: Tensor, dim) -> Tuple[Tensor, Tensor]:
    """``g / (||g|| + 1)`` over ``dim``; also returns the norm."""
    norm = torch.linalg.vector_norm(g, dim=dim, keepdim=True)
    return g / (norm + 1), norm


def _col_normalize_backward(g: Tensor, norm: Tensor, grad: Tensor, dim) -> Tensor:
    """Gradient through ``g / (||g|| + 1)``; a zero column has gradient
    ``grad / 1`` (the norm's subgradient 0 at 0, as autograd takes it)."""
    inner = (grad * g).sum(dim=dim, keepdim=True)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    coef = torch.where(norm > 0, inner / ((norm + 1)**2 * safe), torch.zeros_like(norm))
    return grad / (norm + 1) - g * coef


def _dwconv_per_sample(x: Tensor, weight: Tensor) -> Tensor:
    """3x3 depth-wise conv, zero padding 1, a kernel per sample:
    x (B, c, h, w), weight (B, c, 3, 3) -> (B, c, h, w) in x's memory format.
    One convolution per sample: the samples as ``B*c`` channels of one would
    need an NCHW copy of a channels-last ``x`` (3x slower on CPU at batch 2)."""
    c = x.shape[1]
    if x.shape[0] == 1:
        return F.conv2d(x, weight.view(c, 1, 3, 3), padding=1, groups=c)
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        out[i:i + 1] = F.conv2d(x[i:i + 1], weight[i].view(c, 1, 3, 3), padding=1, groups=c)
    return out


def _window_products(a: Tensor, b: Tensor) -> Tensor:
    """``out[n, c, i, j] = sum_(y,x) apad[n, c, y+i, x+j] * b[n, c, y, x]``
    (zero padding 1): (B, c, h, w) x2 -> (B, c, 3, 3). Nine products of
    shifted views: several times faster than ``einsum`` on channels-last
    maps, and more accurate than a depth-wise convolution's weight gradient."""
    h, w = a.shape[-2:]
    a_pad = F.pad(a, (1, 1, 1, 1))  # (B, c, h + 2, w + 2)
    prod = torch.empty_like(b)  # one buffer for the nine products
    out = b.new_empty(b.shape[:2] + (9, ))  # (B, c, 9)
    for k in range(9):
        i, j = divmod(k, 3)
        torch.sum(torch.mul(a_pad[:, :, i:i + h, j:j + w], b, out=prod), (-2, -1),
                  out=out[..., k])
    return out.unflatten(-1, (3, 3))


def _split(qkv: Tensor, d: int):
    """``c`` and the channel slices of ``qkv`` (B, N, 3C + 3d)."""
    c = (qkv.shape[-1] - 3 * d) // 3
    return c, [qkv[..., i * c:(i + 1) * c] for i in range(3)], [
        qkv[..., 3 * c + i * d:3 * c + (i + 1) * d] for i in range(3)]


def _rotations(h, w, c, heads, device, rope: bool) -> Optional[Tensor]:
    return _rope_rotations(h, w, c, heads, device) if rope else None


# ---------------------------------------------------------------------------
# The ops
# ---------------------------------------------------------------------------
@torch.library.custom_op('mmvit3::ttt_inner', mutates_args=())
def _ttt_inner(qkv: Tensor, w1: Tensor, w2: Tensor, w3: Tensor, h: int, w: int,
               num_heads: int, scale: float, lr: float,
               rope: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns ``concat(out1, out2)`` (B, N, C + d) and what backward needs:
    inner module 1's gradient, its column norms and the updated weights
    (``W1' | W2'``), the same for inner module 2."""
    b, n, _ = qkv.shape
    d = w3.shape[0]
    c, (q1, k1, v1), (q2, k2, v2) = _split(qkv, d)
    rot = _rotations(h, w, c, num_heads, qkv.device, rope)
    w12 = torch.cat([w1, w2], dim=-1)  # (1, H, d, 2d)

    # Inner module 1
    qh, kh, vh = _to_heads(q1, rot, num_heads), _to_heads(k1, rot, num_heads), _heads(
        v1, num_heads)
    # --- Forward ---
    z = kh @ w12  # (B, H, N, 2d)
    # --- Backward ---  dL/dz = coef [silu(z2) v, silu'(z2) z1 v], in z's buffer
    p = _swiglu_grad_(z, vh)
    g = (kh.transpose(-2, -1) @ p).mul_(-scale / n)  # (B, H, d, 2d)
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
    q2, k2, v2 = (grid(t.contiguous(), (h, w)) for t in (q2, k2, v2))
    g3 = _window_products(k2, v2).mul_(-scale / (h * w))  # (B, d, 3, 3)
    g3_hat, g3_norm = _col_normalize(g3, dim=(-2, -1))
    w3_new = w3.reshape(1, d, 3, 3) - lr * g3_hat  # (B, d, 3, 3)
    out[..., c:] = tokens(_dwconv_per_sample(q2, w3_new))
    return out, g, g_norm, w12_new, g3, g3_norm, w3_new


@_ttt_inner.register_fake
def _(qkv, w1, w2, w3, h, w, num_heads, scale, lr, rope):
    b, n, total = qkv.shape
    d = w3.shape[0]
    c = (total - 3 * d) // 3
    hd = c // num_heads
    new = qkv.new_empty
    return (new(b, n, c + d), new(b, num_heads, hd, 2 * hd), new(b, num_heads, 1, 2 * hd),
            new(b, num_heads, hd, 2 * hd), new(b, d, 3, 3), new(b, d, 1, 1), new(b, d, 3, 3))


@torch.library.custom_op('mmvit3::ttt_inner_backward', mutates_args=())
def _ttt_inner_backward(grad_out: Tensor, qkv: Tensor, w1: Tensor, w2: Tensor, w3: Tensor,
                        g: Tensor, g_norm: Tensor, w12_new: Tensor, g3: Tensor,
                        g3_norm: Tensor, w3_new: Tensor, h: int, w: int, num_heads: int,
                        scale: float, lr: float,
                        rope: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of ``mmvit3::ttt_inner``'s first output with respect to
    ``qkv``, ``w1``, ``w2`` and ``w3``."""
    b, n, _ = qkv.shape
    d = w3.shape[0]
    heads = num_heads
    c, (q1, k1, v1), (q2, k2, v2) = _split(qkv, d)
    rot = _rotations(h, w, c, heads, qkv.device, rope)
    w12 = torch.cat([w1, w2], dim=-1)
    grad_out = grad_out.contiguous()
    grad_qkv = torch.empty_like(qkv)

    # ---- inner module 1 ----
    qh, kh, vh = _to_heads(q1, rot, heads), _to_heads(k1, rot, heads), _heads(v1, heads)
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
    _from_heads(dq, rot, grad_qkv[..., :c])
    _from_heads(dk, rot, grad_qkv[..., c:2 * c])
    _heads(grad_qkv[..., 2 * c:3 * c], heads).copy_(dv)

    # ---- inner module 2 ----
    q2, k2, v2 = (grid(t.contiguous(), (h, w)) for t in (q2, k2, v2))
    coef3 = -scale / (h * w)
    d_out2 = grid(grad_out[..., c:].contiguous(), (h, w))  # (B, d, h, w)
    d_q2 = _dwconv_per_sample(d_out2, w3_new.flip(-2, -1))
    d_w3_new = _window_products(q2, d_out2)  # (B, d, 3, 3)
    d_w3 = d_w3_new.sum(0).unsqueeze(1)  # (d, 1, 3, 3)
    dg3 = _col_normalize_backward(g3, g3_norm, d_w3_new.mul_(-lr), dim=(-2, -1))
    d_k2 = _dwconv_per_sample(v2, dg3.flip(-2, -1)).mul_(coef3)
    d_v2 = _dwconv_per_sample(k2, dg3).mul_(coef3)
    for i, t in enumerate((d_q2, d_k2, d_v2)):
        grad_qkv[..., 3 * c + i * d:3 * c + (i + 1) * d] = tokens(t)
    return grad_qkv, d_w12[..., :d].contiguous(), d_w12[..., d:].contiguous(), d_w3


@_ttt_inner_backward.register_fake
def _(grad_out, qkv, w1, w2, w3, *args):
    return (torch.empty_like(qkv), torch.empty_like(w1), torch.empty_like(w2),
            torch.empty_like(w3))


def _setup_context(ctx, inputs, output):
    qkv, w1, w2, w3, *meta = inputs
    ctx.save_for_backward(qkv, w1, w2, w3, *output[1:])
    ctx.meta = meta


def _backward(ctx, grad_out, *unused):
    grads = torch.ops.mmvit3.ttt_inner_backward(grad_out, *ctx.saved_tensors, *ctx.meta)
    return (*grads, ) + (None, ) * len(ctx.meta)


_ttt_inner.register_autograd(_backward, setup_context=_setup_context)


def ttt_inner(qkv: Tensor, w1: Tensor, w2: Tensor, w3: Tensor, hw_shape, num_heads: int,
              scale: float, lr: float, rope: bool = True) -> Tensor:
    """``qkv`` (B, N, 3C + 3d) -> ``concat(out1, out2)`` (B, N, C + d)
    through ``mmvit3::ttt_inner``, in float32 or float64, never lower (also
    under autocast); the result has ``qkv``'s dtype."""
    dtype = qkv.dtype if qkv.dtype in (torch.float32, torch.float64) else torch.float32
    with autocast_off(qkv):
        out = torch.ops.mmvit3.ttt_inner(qkv.to(dtype).contiguous(), w1.to(dtype),
                                         w2.to(dtype), w3.to(dtype), hw_shape[0],
                                         hw_shape[1], num_heads, float(scale), float(lr),
                                         bool(rope))[0]
    return out.to(qkv.dtype)
