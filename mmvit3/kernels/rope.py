# Copyright (c) mmvit3 authors. All rights reserved.
"""2D rotary position embedding of the TTT mixer, computed for the actual grid of
every input; nothing about it is learned or stored. The plain mixer
(:mod:`mmvit3.models.ttt`) and the fused inner step (:mod:`.ttt_fused`) both
use it."""
from typing import Tuple

import torch


def rope_2d_cos_sin(hw_shape: Tuple[int, int], channels: int,
                    device=None,
                    base: float = 10000.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the 2D RoPE angles for an ``h x w`` grid.

    With ``K = channels / 4`` frequencies ``theta_i = base^(-i/K)``, channel
    pair ``j`` at grid position ``(y, x)`` turns by ``y * theta_j`` for
    ``j < K`` and by ``x * theta_(j-K)`` for ``K <= j < 2K``.

    Args:
        hw_shape (tuple[int, int]): The grid ``(h, w)``.
        channels (int): Channels rotated; a multiple of 4.
        device (torch.device, optional): Where to build the tables.
        base (float): The RoPE base. Defaults to 10000.

    Returns:
        tuple[Tensor, Tensor]: ``cos`` and ``sin``, each ``(h * w, channels / 2)``
        in float32.
    """
    if channels % 4:
        raise ValueError(f'2D RoPE needs channels divisible by 4, got {channels}')
    h, w = hw_shape
    k_max = channels // 4
    theta = 1.0 / (base**(
        torch.arange(k_max, device=device, dtype=torch.float32) / k_max))
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    angle_y = (ys[:, None] * theta).unsqueeze(1).expand(h, w, k_max)  # (h, w, K)
    angle_x = (xs[:, None] * theta).unsqueeze(0).expand(h, w, k_max)  # (h, w, K)
    angles = torch.cat([angle_y, angle_x], dim=-1).reshape(h * w, 2 * k_max)  # (N, C/2)
    return angles.cos(), angles.sin()


def apply_rope_2d(x: torch.Tensor, cos: torch.Tensor,
                  sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2j, 2j+1)`` of ``x`` (B, N, C) by the angles."""
    pairs = x.unflatten(-1, (-1, 2))  # (B, N, C/2, 2)
    u, v = pairs.unbind(-1)  # (B, N, C/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rotated = torch.stack([u * cos - v * sin, v * cos + u * sin], dim=-1)  # (B, N, C/2, 2)
    return rotated.flatten(-2)  # (B, N, C)
