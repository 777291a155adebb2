# Copyright (c) mmvit3 authors. All rights reserved.
"""The simple feature pyramid of ViTDet ("Exploring Plain Vision Transformer
Backbones for Object Detection", Li et al., ECCV 2022) for plain backbones,
with the interface of MMDetection's ``projects/ViTDet`` ``SimpleFPN`` (which
the installed mmdet package does not ship), and the channel LayerNorm
``LN2d`` its configs name.

Needs torch, mmengine and mmcv only; ``mmvit3.registration`` registers both
in MMDetection's ``MODELS``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule

from ..errors import ConfigError


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (``'LN2d'``).

    Args:
        num_features (int): Channels ``C``.
        eps (float): Added to the variance. Defaults to 1e-6.
        requires_grad (bool): Whether weight and bias train (mmcv's
            ``build_norm_layer`` sets it from the config). Defaults to True.
    """

    def __init__(self, num_features: int, eps: float = 1e-6, requires_grad: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features), requires_grad=requires_grad)
        self.bias = nn.Parameter(torch.zeros(num_features), requires_grad=requires_grad)
        self.eps = eps
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_features, ), self.weight,
                         self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class SimpleFPN(BaseModule):
    """Simple feature pyramid from a plain backbone's last stride-16 map.

    Four maps at strides 4, 8, 16 and 32 from the one ``(B, C, h, w)``
    input: two 2x2 deconvolutions (with ``norm_cfg`` norm and GELU between),
    one, the identity and a 2x2 max-pool; each then through a 1x1 lateral
    and a 3x3 output ``ConvModule`` (``norm_cfg``, ``act_cfg``) to
    ``out_channels``; more outputs (``num_outs > 4``) by stride-2
    subsampling of the last. On an odd map the pooled one rounds down, as
    in ViTDet.

    Args:
        backbone_channel (int): Channels ``C`` of the backbone's map.
        in_channels (Sequence[int]): Channels of the four scales before the
            laterals; ``[C/4, C/2, C, C]``.
        out_channels (int): Channels of every output.
        num_outs (int): Number of outputs, at least 4.
        conv_cfg (dict, optional): Convolution config of the ConvModules.
        norm_cfg (dict, optional): Norm of the up-sampling and the
            ConvModules, e.g. ``dict(type='LN2d', requires_grad=True)`` as in
            ViTDet. None for none (the up-sampling then has none either).
        act_cfg (dict, optional): Activation of the ConvModules. Defaults
            to None, as in ViTDet.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 backbone_channel: int,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        c = backbone_channel
        expected = [c // 4, c // 2, c, c]
        if list(in_channels) != expected or c % 4:
            raise ConfigError(f'SimpleFPN: in_channels must be [C/4, C/2, C, C] = {expected} '
                             f'for backbone_channel C = {c} (a multiple of 4), got '
                             f'{list(in_channels)}')
        if num_outs < 4:
            raise ConfigError(f'SimpleFPN: num_outs must be at least 4, got {num_outs}')
        self.backbone_channel = c
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs

        up_norm = build_norm_layer(norm_cfg, c // 2)[1] if norm_cfg else nn.Identity()
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 2, 2), up_norm, nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for channels in self.in_channels:
            self.lateral_convs.append(
                ConvModule(channels, out_channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                           act_cfg=act_cfg, inplace=False))
            self.fpn_convs.append(
                ConvModule(out_channels, out_channels, 3, padding=1, conv_cfg=conv_cfg,
                           norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """``inputs``: the backbone's outputs; the last, ``(B, C, h, w)``, is
        used. Returns ``num_outs`` maps of ``out_channels`` at strides 4, 8,
        16, 32 (64, ...) of the input image."""
        x = inputs[-1]
        if x.shape[1] != self.backbone_channel:
            raise ConfigError(f'SimpleFPN: backbone_channel is {self.backbone_channel}, the '
                             f'backbone gave {x.shape[1]} channels')
        features: List[torch.Tensor] = [self.fpn1(x), self.fpn2(x), self.fpn3(x), self.fpn4(x)]
        outs = [conv(lateral(f)) for f, lateral, conv in
                zip(features, self.lateral_convs, self.fpn_convs)]
        for _ in range(self.num_outs - self.num_ins):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
