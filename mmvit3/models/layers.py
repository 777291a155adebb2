# Copyright (c) mmvit3 authors. All rights reserved.
"""Small layers both ViT³ backbones are built from: the token <-> grid
views, the padding of odd sizes, a convolution with its norm and ReLU, and
the two MLP kinds of the block (H-ViT³'s convolutional one, plain ViT³'s
two-layer one).

Tokens travel as ``(B, N, C)`` with an explicit ``hw_shape = (h, w)``;
``N = h * w`` in row-major order.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule

HWShape = Tuple[int, int]


def tokens_to_grid(x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
    """``(B, N, C)`` tokens -> ``(B, C, h, w)`` feature map, contiguous (a
    channels-last view would give the depth-wise convolutions' weights
    gradients of another layout than the weights', which DDP warns about
    and copies every step)."""
    b, n, c = x.shape
    h, w = hw_shape
    if n != h * w:
        raise ValueError(f'{n} tokens do not fill a {h}x{w} grid')
    return x.transpose(1, 2).reshape(b, c, h, w).contiguous()


def grid_to_tokens(x: torch.Tensor) -> Tuple[torch.Tensor, HWShape]:
    """``(B, C, h, w)`` feature map -> ``(B, N, C)`` tokens and ``(h, w)``.

    Written as a permute, not ``flatten(2).transpose(1, 2)``: at batch 1 the
    latter hands a BatchNorm before it a gradient of batch stride ``C``, for
    which torch's CPU BatchNorm backward (2.13) computes wrong gradients."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c), (h, w)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` on the right and bottom to multiples of
    ``multiple`` (always a pad, of zero where nothing is missing, so that
    exported graphs keep H and W symbolic)."""
    return F.pad(x, (0, -x.shape[3] % multiple, 0, -x.shape[2] % multiple))


class ConvBNAct(nn.Module):
    """Conv2d -> norm (if ``norm_cfg``) -> ReLU (if ``act``), named
    ``conv`` / ``norm`` as in the released checkpoints.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Kernel size.
        stride (int): Stride. Defaults to 1.
        padding (int): Zero padding. Defaults to 0.
        groups (int): Convolution groups. Defaults to 1.
        bias (bool): Whether the convolution has a bias. Defaults to False.
        norm_cfg (dict, optional): Norm layer config, None for no norm.
            Defaults to ``dict(type='BN')``.
        act (bool): Whether a ReLU follows. Defaults to True.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 stride: int = 1,
                 padding: int = 0,
                 groups: int = 1,
                 bias: bool = False,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding, groups=groups, bias=bias)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1] if norm_cfg else None
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ConvFFN(BaseModule):
    """H-ViT³'s MLP: fc1 -> GELU -> dropout -> ``u + dwc(u)`` -> GELU ->
    fc2 -> dropout.

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Hidden channels.
        drop_rate (float): Dropout rate. Defaults to 0.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 drop_rate: float = 0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.dwc = nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1,
                             groups=hidden_dims)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``."""
        x = self.drop(self.act(self.fc1(x)))  # (B, N, hidden)
        x = x + grid_to_tokens(self.dwc(tokens_to_grid(x, hw_shape)))[0]
        x = self.act(x)
        return self.drop(self.fc2(x))  # (B, N, C)


class Mlp(BaseModule):
    """Plain ViT³'s MLP: fc1 -> GELU -> dropout -> fc2 -> dropout (no
    depth-wise convolution).

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Hidden channels.
        drop_rate (float): Dropout rate. Defaults to 0.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self, embed_dims: int, hidden_dims: int, drop_rate: float = 0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, hw_shape: Optional[HWShape] = None) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``; ``hw_shape`` is not needed (taken
        so that the block calls both MLP kinds alike)."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
