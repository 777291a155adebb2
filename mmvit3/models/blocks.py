# Copyright (c) mmvit3 authors. All rights reserved.
"""The ViT³ block, one class for both backbones::

    x = x + cpe(x)
    x = x + drop_path(attn(norm1(x)))
    x = x + drop_path(mlp(norm2(x)))

``cpe`` is a 3x3 depth-wise convolution on the token grid (conditional
position encoding), ``attn`` the TTT mixer (:mod:`.ttt`). What differs
between H-ViT³ and plain ViT³ is an argument: the MLP kind, RoPE in the
mixer, the head width and the LayerNorms' eps.
"""
import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule

from ..errors import ConfigError
from .impl import check_impl, fused_forward
from .layers import ConvFFN, HWShape, Mlp, grid_to_tokens, tokens_to_grid
from .ttt import HEAD_DIM, TTTMixer

#: The MLP kinds of a block: H-ViT³'s convolutional one, plain ViT³'s.
MLPS = {'conv': ConvFFN, 'plain': Mlp}


class ViT3Block(BaseModule):
    """One ViT³ block (see the module docstring).

    Args:
        embed_dims (int): Channels ``C``.
        head_dim (int): Channels per head of inner module 1, also the width
            of inner module 2; ``embed_dims`` must be a multiple. Defaults
            to 32 (H-ViT³; plain ViT³ uses ``C / num_heads``).
        mlp_ratio (float): MLP hidden width over ``C``. Defaults to 4.
        mlp (str): ``'conv'`` (H-ViT³: a depth-wise convolution between
            fc1 and fc2) or ``'plain'`` (plain ViT³: fc1 -> GELU -> fc2).
            Defaults to ``'conv'``.
        use_rope (bool): 2D RoPE on the queries and keys of inner module 1
            (H-ViT³ has it, plain ViT³ not). Defaults to True.
        ln_eps (float): eps of both LayerNorms. Defaults to 1e-5 (plain
            ViT³: 1e-6).
        drop_rate (float): Dropout rate in the MLP. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        with_cp (bool): Recompute the block in backward (gradient
            checkpointing) to save memory. Defaults to False.
        impl (str): ``'auto'``, ``'plain'`` or ``'fused'`` (see
            :class:`~mmvit3.models.vit3.ViT3`). Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 head_dim: int = HEAD_DIM,
                 mlp_ratio: float = 4.,
                 mlp: str = 'conv',
                 use_rope: bool = True,
                 ln_eps: float = 1e-5,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 impl: str = 'auto',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if mlp not in MLPS:
            raise ConfigError(f'mlp must be one of {tuple(MLPS)}, got {mlp!r}')
        self.with_cp = with_cp
        self.impl = check_impl(impl)
        self.cpe = nn.Conv2d(embed_dims, embed_dims, 3, padding=1,
                             groups=embed_dims)
        self.norm1 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.attn = TTTMixer(embed_dims, head_dim=head_dim, use_rope=use_rope)
        self.drop_path = (DropPath(drop_path_rate)
                          if drop_path_rate > 0. else nn.Identity())
        self.norm2 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.mlp = MLPS[mlp](embed_dims, int(embed_dims * mlp_ratio), drop_rate)

    def _forward(self, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
        fused = fused_forward(self, x)
        if fused is not None:
            return fused(self, x, hw_shape)
        x = x + grid_to_tokens(self.cpe(tokens_to_grid(x, hw_shape)))[0]
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return x + self.drop_path(self.mlp(self.norm2(x), hw_shape))

    def forward(self, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        return self._forward(x, hw_shape)
