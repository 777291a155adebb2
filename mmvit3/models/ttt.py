# Copyright (c) mmvit3 authors. All rights reserved.
"""The ViT³ token mixer: test-time training (TTT) in place of attention.

Every layer builds two small inner modules from the keys and values of the
current image with one closed-form, non-causal gradient step over all tokens,
then applies the updated inner modules to the queries (the paper's Sec. 3):

* inner module 1, a simplified SwiGLU per head: ``f(x) = (x W1) * silu(x W2)``;
* inner module 2, a 3x3 depth-wise convolution ``W3`` on the token grid.

Tokens travel as ``(B, N, C)`` with an explicit ``hw_shape = (h, w)``;
``N = h * w`` in row-major order.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

from ..errors import ConfigError
from ..kernels.rope import apply_rope_2d, rope_2d_cos_sin

#: Channels per head, and width of inner module 2, in H-ViT³ (d = 32).
HEAD_DIM = 32
#: Scale ``s`` of both inner losses (the released weights were trained with 1/3).
INNER_LOSS_SCALE = 1.0 / 3.0
#: Learning rate of the single inner step.
INNER_LR = 1.0


# ---------------------------------------------------------------------------
# Inner module 1: simplified SwiGLU, one closed-form step
# ---------------------------------------------------------------------------
def swiglu_apply(x: torch.Tensor, w1: torch.Tensor,
                 w2: torch.Tensor) -> torch.Tensor:
    """Inner module 1, ``f(x) = (x W1) * silu(x W2)``; weights are ``[in, out]``."""
    return (x @ w1) * F.silu(x @ w2)


def normalize_columns(grad: torch.Tensor) -> torch.Tensor:
    """``G[:, o] / (||G[:, o]||_2 + 1)``, the norm taken over the input index."""
    return grad / (grad.norm(dim=-2, keepdim=True) + 1.0)


def inner_train_swiglu(w1: torch.Tensor, w2: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor,
                       scale: float = INNER_LOSS_SCALE,
                       lr: float = INNER_LR) -> Tuple[torch.Tensor, torch.Tensor]:
    """One step of inner module 1 on the inner loss
    ``L1 = -(s/N) sum_n <f(k_n), v_n>``, with its gradient in closed form.

    Args:
        w1, w2 (Tensor): Inner weights, ``(1 or B, H, d, d)`` as ``[in, out]``.
        k, v (Tensor): Keys and values, ``(B, H, N, d)``.
        scale (float): Inner loss scale ``s``. Defaults to 1/3.
        lr (float): Inner learning rate. Defaults to 1.

    Returns:
        tuple[Tensor, Tensor]: The updated ``W1', W2'``, ``(B, H, d, d)``.
    """
    num_tokens = k.shape[-2]
    # --- Forward ---
    z1 = k @ w1  # (B, H, N, d)
    z2 = k @ w2  # (B, H, N, d)
    sig = torch.sigmoid(z2)
    # --- Backward --- dL1/dz with e = dL1/df = -(s/N) v
    e = v * (-scale / num_tokens)  # (B, H, N, d)
    k_t = k.transpose(-2, -1)  # (B, H, d, N)
    g1 = k_t @ (e * z2 * sig)  # silu(z2) = z2 * sig; (B, H, d, d)
    g2 = k_t @ (e * z1 * sig * (1.0 + z2 * (1.0 - sig)))  # (B, H, d, d)
    # --- Step ---
    return w1 - lr * normalize_columns(g1), w2 - lr * normalize_columns(g2)


# ---------------------------------------------------------------------------
# Inner module 2: 3x3 depth-wise convolution, one closed-form step
# ---------------------------------------------------------------------------
def dwconv3x3_per_sample(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 depth-wise convolution (zero padding 1, no bias) with its own
    kernel for every sample.

    Args:
        x (Tensor): ``(B, c, h, w)``.
        weight (Tensor): ``(B, c, 3, 3)``.

    Returns:
        Tensor: ``(B, c, h, w)``.
    """
    b, c, h, w = x.shape
    out = F.conv2d(
        x.reshape(1, b * c, h, w),  # samples folded into groups
        weight.reshape(b * c, 1, 3, 3),
        padding=1,
        groups=b * c)  # (1, B*c, h, w)
    return out.reshape(b, c, h, w)


def inner_train_dwconv(w3: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       scale: float = INNER_LOSS_SCALE,
                       lr: float = INNER_LR) -> torch.Tensor:
    """One step of inner module 2 on the inner loss
    ``L2 = -(s/(h w)) sum_(y,x) <g(k)_(y,x), v_(y,x)>``, ``g`` the 3x3 depth-wise
    convolution with weight ``W3``; the gradient is in closed form.

    Args:
        w3 (Tensor): Inner weight, ``(c, 1, 3, 3)``.
        k, v (Tensor): Keys and values on the grid, ``(B, c, h, w)``.
        scale (float): Inner loss scale ``s``. Defaults to 1/3.
        lr (float): Inner learning rate. Defaults to 1.

    Returns:
        Tensor: The updated kernels ``W3'``, one per sample, ``(B, c, 3, 3)``.
    """
    _, _, h, w = k.shape
    # --- Backward --- G3[c, i, j] = sum_(y,x) kpad[c, y+i, x+j] * e[c, y, x]
    e = v * (-scale / (h * w))  # (B, c, h, w)
    k_pad = F.pad(k, (1, 1, 1, 1))  # (B, c, h+2, w+2)
    g3 = torch.stack([(k_pad[:, :, i:i + h, j:j + w] * e).sum(dim=(-2, -1))
                      for i in range(3) for j in range(3)],
                     dim=-1)  # (B, c, 9)
    g3 = g3 / (g3.norm(dim=-1, keepdim=True) + 1.0)
    # --- Step ---
    return w3.reshape(1, -1, 3, 3) - lr * g3.unflatten(-1, (3, 3))  # (B, c, 3, 3)


# ---------------------------------------------------------------------------
# The mixer
# ---------------------------------------------------------------------------
class TTTMixer(BaseModule):
    """ViT³ token mixer: two inner modules trained at test time (the paper's
    Sec. 3).

    ``qkv`` projects to ``q1, k1, v1`` (``C`` channels in ``C / d`` heads of
    ``d``, inner module 1, optionally 2D RoPE on ``q1`` and ``k1``) and
    ``q2, k2, v2`` (``d`` channels, inner module 2); ``proj`` merges both
    outputs back to ``C`` channels.

    Args:
        embed_dims (int): Channels ``C``; a multiple of ``head_dim``.
        head_dim (int): Channels per head ``d``, also the width of inner
            module 2. Defaults to 32.
        use_rope (bool): 2D rotary position embedding on ``q1`` and ``k1``
            (H-ViT³ has it, the plain ViT³ not). Defaults to True.
        inner_loss_scale (float): Scale ``s`` of both inner losses.
            Defaults to 1/3, the value the released weights were trained with.
        inner_lr (float): Inner learning rate. Defaults to 1.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 head_dim: int = HEAD_DIM,
                 use_rope: bool = True,
                 inner_loss_scale: float = INNER_LOSS_SCALE,
                 inner_lr: float = INNER_LR,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % head_dim:
            raise ConfigError(f'embed_dims ({embed_dims}) must be a multiple of '
                             f'head_dim ({head_dim})')
        self.embed_dims = embed_dims
        self.head_dim = head_dim
        self.num_heads = embed_dims // head_dim
        self.use_rope = use_rope
        self.inner_loss_scale = inner_loss_scale
        self.inner_lr = inner_lr

        self.qkv = nn.Linear(embed_dims, 3 * embed_dims + 3 * head_dim)
        self.w1 = nn.Parameter(torch.empty(1, self.num_heads, head_dim, head_dim))
        self.w2 = nn.Parameter(torch.empty(1, self.num_heads, head_dim, head_dim))
        self.w3 = nn.Parameter(torch.empty(head_dim, 1, 3, 3))
        self.proj = nn.Linear(embed_dims + head_dim, embed_dims)
        for weight in (self.w1, self.w2, self.w3):
            trunc_normal_(weight, std=.02)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        """``x``: ``(B, N, C)`` tokens of an ``hw_shape`` grid -> ``(B, N, C)``."""
        b, n, c = x.shape
        h, w = hw_shape
        d, heads = self.head_dim, self.num_heads
        q1, k1, v1, q2, k2, v2 = self.qkv(x).split([c, c, c, d, d, d], dim=-1)

        # Inner module 1: simplified SwiGLU per head.
        if self.use_rope:
            cos, sin = rope_2d_cos_sin(hw_shape, c, device=x.device)
            q1 = apply_rope_2d(q1, cos, sin)
            k1 = apply_rope_2d(k1, cos, sin)
        # (B, N, C) -> (B, H, N, d)
        q1, k1, v1 = (t.reshape(b, n, heads, d).transpose(1, 2) for t in (q1, k1, v1))
        w1, w2 = inner_train_swiglu(self.w1, self.w2, k1, v1,
                                    self.inner_loss_scale, self.inner_lr)
        out1 = swiglu_apply(q1, w1, w2)  # (B, H, N, d)
        out1 = out1.transpose(1, 2).reshape(b, n, c)  # (B, N, C)

        # Inner module 2: 3x3 depth-wise convolution on the grid.
        # (B, N, d) -> (B, d, h, w)
        q2, k2, v2 = (t.transpose(1, 2).reshape(b, d, h, w) for t in (q2, k2, v2))
        w3 = inner_train_dwconv(self.w3, k2, v2, self.inner_loss_scale,
                                self.inner_lr)
        out2 = dwconv3x3_per_sample(q2, w3)  # (B, d, h, w)
        out2 = out2.flatten(2).transpose(1, 2)  # (B, N, d)

        return self.proj(torch.cat([out1, out2], dim=-1))

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
                f'head_dim={self.head_dim}, use_rope={self.use_rope}, '
                f'inner_loss_scale={self.inner_loss_scale:.4g}, '
                f'inner_lr={self.inner_lr}')
