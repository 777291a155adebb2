# Copyright (c) mmvit3 authors. All rights reserved.
"""Plain ViT³, the non-hierarchical (DeiT-sized) ViT³, as a backbone for
dense prediction.

One stride-16 patch embedding, then ``depth`` blocks at one width on the
same token grid (CPE, TTT mixer without RoPE, plain MLP). State-dict names
follow the authors' released ImageNet files, so their checkpoints load
without renaming. Unlike the released classifier, the token grid is the
input's own ``ceil(H/16) x ceil(W/16)`` (the image is zero-padded right and
bottom to multiples of 16), never assumed square.

The blocks are :class:`~mmvit3.models.blocks.ViT3Block` with the plain MLP,
no RoPE and LayerNorm eps 1e-6; each asks
:func:`mmvit3.models.impl.fused_forward` whether a fused implementation of
the same computation runs instead (``impl``).

This module needs torch, mmengine and mmcv only; it never imports mmdet or
mmseg (``mmvit3.registration`` puts it into their registries).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule, ModuleList

from ..errors import ConfigError
from .base import BackboneBase
from .blocks import ViT3Block
from .impl import check_impl
from .layers import HWShape, grid_to_tokens, pad_to_multiple, tokens_to_grid
from .weights import PLAIN_LAYOUT

#: eps of every LayerNorm of the plain model (as released).
LN_EPS = 1e-6


class PlainPatchEmbed(BaseModule):
    """Non-overlapping patch embedding ``proj`` (Conv2d, kernel = stride =
    ``patch_size``, with bias); pads the image right/bottom to multiples of
    ``patch_size`` first.

    Args:
        in_channels (int): Image channels. Defaults to 3.
        embed_dims (int): Output channels. Defaults to 192.
        patch_size (int): Patch side. Defaults to 16.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self, in_channels: int = 3, embed_dims: int = 192,
                 patch_size: int = 16, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, HWShape]:
        """``(B, 3, H, W)`` -> ``(B, N, C)`` tokens on ``(ceil(H/p), ceil(W/p))``."""
        return grid_to_tokens(self.proj(pad_to_multiple(x, self.patch_size)))


class PlainViT3(BackboneBase):
    """Plain ViT³ backbone: a non-hierarchical Vision Test-Time Training
    transformer.

    The DeiT-sized ViT³ of "ViT³: Unlocking Test-Time Training in Vision"
    (Han et al., CVPR 2026) for MMDetection and MMSegmentation: a stride-16
    patch embedding and ``depth`` blocks of the TTT mixer on one token grid,
    so every output is a stride-16 map (``ceil(H/16) x ceil(W/16)``, any
    input size); the cost is linear in the number of pixels. Detection
    builds its pyramid from the last map (:class:`SimpleFPN`), segmentation
    takes several blocks through a multi-level neck.

    Args:
        arch (str | dict): ``'tiny'``/``'t'``, ``'small'``/``'s'``,
            ``'base'``/``'b'``, or a dict with ``embed_dims``, ``depth`` and
            ``num_heads``. Defaults to ``'tiny'``.
        in_channels (int): Image channels. Defaults to 3.
        patch_size (int): Patch side of the embedding (the released models
            use 16). Defaults to 16.
        mlp_ratio (float): MLP hidden width over the width. Defaults to 4.
        out_indices (Sequence[int]): Blocks whose outputs are returned
            (negative counts from the end), each through a LayerNorm: the
            last block's through ``norm`` (the released files' final norm,
            loaded with them), the others' through ``norm{i}``. Defaults to
            ``(-1,)``.
        drop_rate (float): Dropout rate in the MLPs. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate of the last block; it
            rises linearly from 0 over the blocks. Defaults to 0.1.
        frozen_stages (int): ``-1`` freezes nothing, ``0`` the patch
            embedding, ``i >= 1`` it and blocks ``0..i-1`` (with their output
            norms); frozen parts stay in eval mode through ``train()``.
            Defaults to -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode while training.
            The plain model has none (its norms are LayerNorms, which have no
            running statistics), so this changes nothing here; it is accepted
            so that settings written for ``ViT3`` carry over. Defaults to
            False.
        with_cp (bool): Gradient checkpointing per block (only when
            gradients are needed). Defaults to False.
        impl (str): ``'plain'``, ``'fused'`` or ``'auto'``, as for ``ViT3``:
            the modules' own code, or fused memory-lean kernels of the same
            computation (``norm -> linear`` pairs and the TTT inner step as
            custom ops); ``'auto'`` fuses on CPU. Switch with
            :meth:`set_impl`. Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config. For the
            authors' ImageNet checkpoints use ``dict(type='Pretrained',
            checkpoint=PATH)`` (optional ``key``, ``prefix``, and
            ``trusted=True`` for a file you trust that holds pickled Python
            objects, as theirs do). Defaults to None.

    Example:
        >>> import torch
        >>> from mmvit3 import PlainViT3
        >>> model = PlainViT3(arch='tiny', out_indices=(2, 5, 8, 11)).eval()
        >>> outs = model(torch.rand(1, 3, 237, 341))
        >>> [tuple(o.shape) for o in outs]
        [(1, 192, 15, 22), (1, 192, 15, 22), (1, 192, 15, 22), (1, 192, 15, 22)]
    """

    weights_layout = PLAIN_LAYOUT

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 patch_size: int = 16,
                 mlp_ratio: float = 4.,
                 out_indices: Sequence[int] = (-1, ),
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        check_impl(impl)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims: int = self.arch_settings['embed_dims']
        self.depth: int = self.arch_settings['depth']
        self.num_heads: int = self.arch_settings['num_heads']
        self._setup(impl, out_indices, frozen_stages, self.depth, 'blocks', norm_eval, with_cp,
                    in_channels, mlp_ratio, drop_rate, drop_path_rate)
        self._check(patch_size=(patch_size, isinstance(patch_size, int) and
                                not isinstance(patch_size, bool) and patch_size >= 1,
                                'a positive integer'))

        self.patch_embed = PlainPatchEmbed(in_channels, self.embed_dims, patch_size)
        rates = torch.linspace(0, drop_path_rate, self.depth, device='cpu').tolist()
        self.blocks = ModuleList([
            ViT3Block(self.embed_dims, head_dim=self.embed_dims // self.num_heads,
                      mlp_ratio=mlp_ratio, mlp='plain', use_rope=False, ln_eps=LN_EPS,
                      drop_rate=drop_rate, drop_path_rate=rate, with_cp=with_cp, impl=impl)
            for rate in rates
        ])
        for i in self.out_indices:
            self.add_module(self.out_norm_name(i), nn.LayerNorm(self.embed_dims, eps=LN_EPS))

        self.apply(self._init_linear_and_norm)
        self._freeze_stages()

    def out_norm_name(self, index: int) -> str:
        """Name of block ``index``'s output norm: ``'norm'`` for the last
        block (the released final norm), ``'norm{index}'`` otherwise."""
        return 'norm' if index == self.depth - 1 else f'norm{index}'

    @classmethod
    def _check_arch(cls, arch: dict) -> dict:
        """A custom arch's width, depth and heads, checked."""
        dims, depth, heads = (int(arch[k]) for k in ('embed_dims', 'depth', 'num_heads'))
        if depth < 1 or heads < 1 or dims < 1 or dims % heads:
            raise ConfigError(f"'embed_dims' must be a positive multiple of 'num_heads', "
                             f"'depth' and 'num_heads' at least 1, got {arch}")
        return {'embed_dims': dims, 'depth': depth, 'num_heads': heads}

    @property
    def num_blocks(self) -> int:
        return self.depth

    def _layer_id(self, parts) -> Optional[int]:
        """Block ``i`` at ``i + 1``."""
        if parts[0] == 'patch_embed':
            return 0
        if parts[0] == 'blocks':
            return int(parts[1]) + 1
        return None

    def _stage(self, index: int) -> nn.Module:
        return self.blocks[index]

    def _out_norm(self, index: int) -> nn.Module:
        return getattr(self, self.out_norm_name(index))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, in_channels, H, W)`` -> one ``(B, C, ceil(H/16), ceil(W/16))``
        map per ``out_indices`` entry."""
        x, hw_shape = self.patch_embed(x)  # (B, N, C)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, self.out_norm_name(i))(x)  # (B, N, C)
                outs.append(tokens_to_grid(out, hw_shape))  # (B, C, h, w)
        return tuple(outs)
