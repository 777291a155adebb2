# Copyright (c) mmvit3 authors. All rights reserved.
"""H-ViT³, the hierarchical ViT³ backbone for dense prediction.

Built bottom-up: convolutional stem -> block (CPE, TTT mixer, convolutional
MLP) -> stage (blocks + patch merging) -> backbone. Tokens travel as
``(B, N, C)`` with an explicit ``hw_shape = (h, w)``. State-dict names follow
the authors' released files, so their checkpoints load without renaming.

What is written here is the model and what runs without fused kernels. The
stem, the patch merging and the block each ask
:func:`mmvit3.models.impl.fused_forward` whether a fused implementation of
the same computation runs instead (``impl``, see :class:`ViT3`).

This module needs torch, mmengine and mmcv only; it never imports mmdet or
mmseg (``mmvit3.registration`` puts it into their registries).
"""
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule, ModuleList
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from .base import BackboneBase
from .blocks import ViT3Block
from .impl import check_impl, fused_forward
from .layers import ConvBNAct, HWShape, grid_to_tokens, pad_to_multiple, tokens_to_grid
from .ttt import HEAD_DIM
from .weights import ROPE_TABLE_KEY, ROPE_TABLE_REASON, VIT3_LAYOUT


class ConvStem(BaseModule):
    """Stride-4 convolutional stem: five ``ConvBNAct`` (3x3 stride 2 to
    ``C0/2``, two 3x3, 3x3 stride 2 to ``4 C0``, 1x1 to ``C0`` without
    ReLU); pads the image right/bottom to a multiple of 4 first.

    Args:
        in_channels (int): Image channels. Defaults to 3.
        embed_dims (int): Output channels ``C0``. Defaults to 64.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        impl (str): ``'auto'``, ``'plain'`` or ``'fused'`` (see
            :class:`ViT3`). Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 64,
                 norm_cfg: dict = dict(type='BN'),
                 impl: str = 'auto',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.impl = check_impl(impl)
        half = embed_dims // 2
        self.conv = nn.Sequential(
            ConvBNAct(in_channels, half, 3, 2, 1, norm_cfg=norm_cfg),
            ConvBNAct(half, half, 3, 1, 1, norm_cfg=norm_cfg),
            ConvBNAct(half, half, 3, 1, 1, norm_cfg=norm_cfg),
            ConvBNAct(half, 4 * embed_dims, 3, 2, 1, norm_cfg=norm_cfg),
            ConvBNAct(4 * embed_dims, embed_dims, 1, norm_cfg=norm_cfg, act=False))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, HWShape]:
        """``(B, 3, H, W)`` image -> ``(B, N, C0)`` tokens and ``(ceil(H/4), ceil(W/4))``."""
        fused = fused_forward(self, x)
        if fused is not None:
            return fused(self, x)
        x = self.conv(pad_to_multiple(x, 4))  # (B, C0, H/4, W/4)
        return grid_to_tokens(x)  # (B, N, C0)


class PatchMerging(BaseModule):
    """Stride-2 down-sampling between stages: 1x1 expand to ``4 Cout`` with
    ReLU, 3x3 depth-wise stride 2 with ReLU, 1x1 project to ``Cout`` with BN;
    pads to even h, w first.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        expand_ratio (int): Hidden width over ``out_channels``. Defaults to 4.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        impl (str): ``'auto'``, ``'plain'`` or ``'fused'`` (see
            :class:`ViT3`). Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 expand_ratio: int = 4,
                 norm_cfg: dict = dict(type='BN'),
                 impl: str = 'auto',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.impl = check_impl(impl)
        hidden = expand_ratio * out_channels
        self.conv = nn.Sequential(
            ConvBNAct(in_channels, hidden, 1, bias=True, norm_cfg=None),
            ConvBNAct(hidden, hidden, 3, 2, 1, groups=hidden, bias=True,
                      norm_cfg=None),
            ConvBNAct(hidden, out_channels, 1, bias=True, norm_cfg=norm_cfg,
                      act=False))

    def forward(self, x: torch.Tensor,
                hw_shape: HWShape) -> Tuple[torch.Tensor, HWShape]:
        """``(B, N, Cin)`` on ``(h, w)`` -> ``(B, N', Cout)`` on ``(ceil(h/2), ceil(w/2))``."""
        fused = fused_forward(self, x)
        if fused is not None:
            return fused(self, x, hw_shape)
        x = pad_to_multiple(tokens_to_grid(x, hw_shape), 2)  # (B, Cin, h', w')
        return grid_to_tokens(self.conv(x))


class ViT3Stage(BaseModule):
    """``depth`` blocks at one width, then patch merging (if
    ``out_channels``).

    Args:
        embed_dims (int): Channels of the blocks.
        depth (int): Number of blocks.
        out_channels (int, optional): Channels after patch merging; None for
            the last stage (no merging). Defaults to None.
        mlp_ratio (float): MLP ratio. Defaults to 4.
        drop_rate (float): Dropout rate. Defaults to 0.
        drop_path_rates (Sequence[float]): One stochastic depth rate per
            block. Defaults to all zero.
        with_cp (bool): Gradient checkpointing per block. Defaults to False.
        norm_cfg (dict): Norm of the patch merging. Defaults to BN.
        impl (str): ``'auto'``, ``'plain'`` or ``'fused'`` (see
            :class:`ViT3`). Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 depth: int,
                 out_channels: Optional[int] = None,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.,
                 drop_path_rates: Optional[Sequence[float]] = None,
                 with_cp: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 impl: str = 'auto',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        drop_path_rates = drop_path_rates or [0.] * depth
        if len(drop_path_rates) != depth:
            raise ValueError(f'{len(drop_path_rates)} drop-path rates for '
                             f'{depth} blocks')
        self.blocks = ModuleList([
            ViT3Block(embed_dims, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
                      drop_path_rate=rate, with_cp=with_cp, impl=impl)
            for rate in drop_path_rates
        ])
        self.downsample = (PatchMerging(embed_dims, out_channels,
                                        norm_cfg=norm_cfg, impl=impl)
                           if out_channels else None)

    def forward(self, x: torch.Tensor, hw_shape: HWShape):
        """Returns ``(x_next, hw_next, x_out, hw_out)``: the merged tokens for
        the next stage and this stage's own output before merging."""
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample is None:
            return x, hw_shape, x, hw_shape
        x_down, hw_down = self.downsample(x, hw_shape)
        return x_down, hw_down, x, hw_shape


class ViT3(BackboneBase):
    """H-ViT³ backbone: hierarchical Vision Test-Time Training.

    A ViT³ backbone from "ViT³: Unlocking Test-Time Training in Vision"
    (Han et al., CVPR 2026), for MMDetection and MMSegmentation. Four stages
    of ViT³ blocks give features at strides 4, 8, 16 and 32 (rounded up) for
    any input size; the cost is linear in the number of pixels.

    Args:
        arch (str | dict): ``'tiny'``/``'t'``, ``'small'``/``'s'``,
            ``'base'``/``'b'``, or a dict with ``embed_dims`` and ``depths``
            (one entry per stage). Defaults to ``'tiny'``.
        in_channels (int): Image channels. Defaults to 3.
        mlp_ratio (float): MLP hidden width over block width. Defaults to 4.
        out_indices (Sequence[int]): Stages whose outputs are returned, each
            through its LayerNorm ``norm{i}``. Defaults to ``(0, 1, 2, 3)``.
        drop_rate (float): Dropout rate after the stem and in the MLPs.
            Defaults to 0.
        drop_path_rate (float): Stochastic depth rate of the last block; it
            rises linearly from 0 over all blocks. Defaults to 0.1.
        frozen_stages (int): ``-1`` freezes nothing, ``0`` the stem, ``i >= 1``
            the stem and stages ``0..i-1`` (with their output norms); frozen
            parts stay in eval mode through ``train()``. Defaults to -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode while training.
            Defaults to False.
        with_cp (bool): Gradient checkpointing per block (only when gradients
            are needed). Defaults to False.
        norm_cfg (dict): Norm of the stem and patch merging. Defaults to
            ``dict(type='BN')``; ``dict(type='SyncBN')`` for multi-GPU.
        impl (str): Which implementation runs: ``'plain'``, the modules'
            own code; ``'fused'``, fused memory-lean kernels of the same
            computation (custom ops that recompute cheap intermediates in
            backward, the inner step in float32 under autocast) wherever
            they exist; ``'auto'``, fused on CPU (where they were measured
            faster) and plain elsewhere. Tracers, exporters and FLOP
            counters always get the plain code; ``torch.compile`` sees the
            fused kernels. Switch at any time with :meth:`set_impl`.
            Defaults to ``'auto'``.
        fast_path (bool, optional): Deprecated: ``True`` is
            ``impl='auto'``, ``False`` is ``impl='plain'``.
        init_cfg (dict, optional): mmengine initialisation config. For the
            authors' checkpoints use ``dict(type='Pretrained',
            checkpoint=PATH)``, with optional ``key`` (``'model'``, the
            default choice, ``'state_dict_ema'``, ...) and ``trusted=True`` to
            load a file you trust that holds pickled Python objects.
            Defaults to None.

    Example:
        >>> import torch
        >>> from mmvit3 import ViT3
        >>> model = ViT3(arch='tiny').eval()
        >>> outs = model(torch.rand(1, 3, 237, 341))
        >>> [tuple(o.shape) for o in outs]
        [(1, 64, 60, 86), (1, 128, 30, 43), (1, 320, 15, 22), (1, 512, 8, 11)]
    """

    weights_layout = VIT3_LAYOUT

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 mlp_ratio: float = 4.,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 impl: str = 'auto',
                 fast_path: Optional[bool] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if fast_path is not None:
            warnings.warn("ViT3(fast_path=...) is deprecated: use impl='auto' "
                          "(fast_path=True) or impl='plain' (fast_path=False)",
                          DeprecationWarning, stacklevel=2)
            impl = 'auto' if fast_path else 'plain'
        check_impl(impl)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims: List[int] = list(self.arch_settings['embed_dims'])
        self.depths: List[int] = list(self.arch_settings['depths'])
        self.num_stages = len(self.depths)
        self._setup(impl, out_indices, frozen_stages, self.num_stages, 'stages', norm_eval,
                    with_cp, in_channels, mlp_ratio, drop_rate, drop_path_rate)

        self.patch_embed = ConvStem(in_channels, self.embed_dims[0], norm_cfg, impl)
        self.drop_after_stem = nn.Dropout(drop_rate)

        # stochastic depth rises linearly over all blocks
        rates = torch.linspace(0, drop_path_rate, sum(self.depths), device='cpu').tolist()
        self.layers = ModuleList()
        for i, depth in enumerate(self.depths):
            first = sum(self.depths[:i])
            self.layers.append(
                ViT3Stage(
                    self.embed_dims[i],
                    depth,
                    out_channels=(self.embed_dims[i + 1]
                                  if i + 1 < self.num_stages else None),
                    mlp_ratio=mlp_ratio,
                    drop_rate=drop_rate,
                    drop_path_rates=rates[first:first + depth],
                    with_cp=with_cp,
                    norm_cfg=norm_cfg,
                    impl=impl))

        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.embed_dims[i]))

        self.apply(self._init_linear_and_norm)
        self._freeze_stages()

    def set_fast_path(self, enabled: bool = True) -> 'ViT3':
        """Deprecated: ``set_impl('auto' if enabled else 'plain')``."""
        warnings.warn("ViT3.set_fast_path() is deprecated: use set_impl('auto') or "
                      "set_impl('plain')", DeprecationWarning, stacklevel=2)
        return self.set_impl('auto' if enabled else 'plain')

    @classmethod
    def _check_arch(cls, arch: dict) -> dict:
        """A custom arch's widths and depths, one per stage, checked."""
        dims, depths = list(arch['embed_dims']), list(arch['depths'])
        if not dims or len(dims) != len(depths):
            raise ConfigError(f"'embed_dims' {dims} and 'depths' {depths} must be "
                             f'non-empty and of equal length (one per stage)')
        bad = [c for c in dims if c <= 0 or c % HEAD_DIM]
        if bad:
            raise ConfigError(f"'embed_dims' must be positive multiples of "
                             f'{HEAD_DIM} (the head width), got {dims}')
        if any(n < 1 for n in depths):
            raise ConfigError(f"'depths' must be at least 1 each, got {depths}")
        return {'embed_dims': dims, 'depths': depths}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Drop the RoPE tables of released files (``...rope.rotations``)
        before loading, and say so once: every load path (``load_from``,
        ``resume``, ``tools/test.py``, a strict ``load_state_dict``) then
        takes the authors' detection / segmentation checkpoints without
        unexpected-key warnings."""
        tables = [k for k in state_dict
                  if k.startswith(prefix) and ROPE_TABLE_KEY.search(k[len(prefix):])]
        for k in tables:
            del state_dict[k]
        if tables:
            print_log(f"ViT3: dropped {len(tables)} '*.rope.rotations' entries "
                      f'of the checkpoint (e.g. {tables[0]}): {ROPE_TABLE_REASON}',
                      logger='current')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    def _layer_id(self, parts) -> Optional[int]:
        """Swin's rule: block ``j`` of stage ``i`` one above the blocks before
        it, each stage's down-sampling with its last block."""
        if parts[0] == 'patch_embed':
            return 0
        if parts[0] == 'layers':
            stage = int(parts[1])
            if parts[2] == 'blocks':
                return sum(self.depths[:stage]) + int(parts[3]) + 1
            return sum(self.depths[:stage + 1])  # downsample
        return None

    def _stage(self, index: int) -> nn.Module:
        return self.layers[index]

    def _out_norm(self, index: int) -> nn.Module:
        return getattr(self, f'norm{index}')

    def _check_batch_norm_input(self, x: torch.Tensor) -> None:
        """A BatchNorm that trains needs more than one value per channel: at
        batch 1, an input of at most ``2^(stages+1)`` px (32 for four
        stages) on both sides leaves the last down-sampling a 1x1 map."""
        if self.num_stages < 2 or x.shape[0] > 1:
            return
        norm = self.layers[-2].downsample.conv[2].norm
        if not (isinstance(norm, _BatchNorm) and norm.training):
            return
        stride = 2**(self.num_stages + 1)
        h, w = x.shape[-2:]
        if -(-h // stride) * -(-w // stride) == 1:
            raise ConfigError(
                f'ViT3: a {h}x{w} input at batch 1 leaves the last down-sampling a '
                f'1x1 map, and its BatchNorm cannot train on one value per channel. '
                f'Train on inputs larger than {stride} px on one side, with batch '
                f'2 or more, or with norm_eval=True (BatchNorms kept in eval mode)')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, in_channels, H, W)`` -> one ``(B, C_i, h_i, w_i)`` map per
        ``out_indices`` entry, ``h_i = ceil(H / 2^(i+2))``."""
        self._check_batch_norm_input(x)
        x, hw_shape = self.patch_embed(x)  # (B, N, C0)
        x = self.drop_after_stem(x)
        outs = []
        for i, stage in enumerate(self.layers):
            x, hw_shape, out, out_hw = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)  # (B, N_i, C_i)
                outs.append(tokens_to_grid(out, out_hw).contiguous())  # (B, C_i, h_i, w_i)
        return tuple(outs)
