# Copyright (c) mmvit3 authors. All rights reserved.
"""H-ViT³, the hierarchical ViT³ backbone for dense prediction (spec §2–§4).

Built bottom-up: conv stem -> block (CPE, TTT mixer, conv MLP) -> stage
(blocks + patch merging) -> backbone. Tokens travel as ``(B, N, C)`` with an
explicit ``hw_shape = (h, w)``. State-dict names follow the authors' released
files, so their checkpoints load without renaming.

This module needs torch, mmengine and mmcv only; it never imports mmdet or
mmseg (``mmvit3.registration`` puts it into their registries).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from .conv_fast import conv2d_fast, conv_args
from .rope import ROPE_TABLE_KEY, ROPE_TABLE_REASON
from .ttt import HEAD_DIM, TTTMixer
from .ttt_fast import layer_norm_linear, mlp_tail_fast

HWShape = Tuple[int, int]


def tokens_to_grid(x: torch.Tensor, hw_shape: HWShape,
                   channels_last: bool = False) -> torch.Tensor:
    """``(B, N, C)`` tokens -> ``(B, C, h, w)`` feature map: a contiguous
    copy, or with ``channels_last`` a channels-last view (no copy)."""
    b, n, c = x.shape
    h, w = hw_shape
    if n != h * w:
        raise ValueError(f'{n} tokens do not fill a {h}x{w} grid')
    if channels_last:
        return x.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return x.transpose(1, 2).reshape(b, c, h, w)


def grid_to_tokens(x: torch.Tensor) -> Tuple[torch.Tensor, HWShape]:
    """``(B, C, h, w)`` feature map -> ``(B, N, C)`` tokens and ``(h, w)``,
    a view (contiguous for a channels-last map)."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(b, h * w, c), (h, w)
    return x.flatten(2).transpose(1, 2), (h, w)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` on the right and bottom to multiples of ``multiple``."""
    pad_h = -x.shape[2] % multiple
    pad_w = -x.shape[3] % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def standard_strides_grad(grad: torch.Tensor) -> torch.Tensor:
    """Tensor hook: ``grad`` with the standard (contiguous) strides of its
    shape. oneDNN returns a depth-wise weight's gradient channels-last for
    channels-last inputs (measured on CPU; a GPU library may too), strides
    ``(9, 1, 3, 1)`` for a ``(C, 1, 3, 3)`` weight; autograd keeps it (the
    odd stride is on a size-1 dim), but DDP's gradient buckets warn that
    the strides differ from the weight's and copy it every step."""
    step, strides = 1, []
    for size in reversed(grad.shape):
        strides.insert(0, step)
        step *= max(size, 1)
    if grad.stride() == tuple(strides):
        return grad
    return grad.clone(memory_format=torch.contiguous_format)


class _GradLikeInput(torch.autograd.Function):
    """Identity whose backward hands on the gradient in the memory format of
    the forward tensor.

    Works around a CPU BatchNorm backward bug (seen in torch 2.13): with a
    contiguous input and a batch-1 gradient laid out channels-last with an
    unusual batch stride, the input gradient comes out wrong.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.channels_last = (x.dim() == 4 and not x.is_contiguous()
                             and x.is_contiguous(memory_format=torch.channels_last))
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last
                               if ctx.channels_last else torch.contiguous_format)


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
        fast_path (bool): On CPU, run the (ungrouped) convolution through
            :func:`~mmvit3.models.conv_fast.conv2d_fast`, which picks the
            fastest memory format per pass (the output is channels-last), and
            without autograd fold an eval-mode BatchNorm into it. Defaults to
            False.
        fast_backward (bool): With ``fast_path``, use ``conv2d_fast`` also
            when autograd records (otherwise only for inference). Defaults
            to True.
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
                 act: bool = True,
                 fast_path: bool = False,
                 fast_backward: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding, groups=groups, bias=bias)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1] if norm_cfg else None
        self.act = nn.ReLU(inplace=True) if act else None
        if fast_path:
            conv_args(self.conv)  # raises for a convolution it cannot run
        self.fast_path = fast_path
        self.fast_backward = fast_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grad = torch.is_grad_enabled()
        if (not (self.fast_path and x.device.type == 'cpu')
                or (grad and not self.fast_backward)):
            return self.norm_act(self.conv(x))
        args = conv_args(self.conv)
        folded = None if grad else self._fold_norm()
        if folded is None:
            return self.norm_act(conv2d_fast(x, self.conv.weight, self.conv.bias, *args))
        x = conv2d_fast(x, *folded, *args)  # norm included
        return x.relu_() if self.act is not None else x

    def _fold_norm(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The convolution's weight and bias with an eval-mode BatchNorm
        folded in (``norm(conv(x)) == conv'(x)``), or None without one."""
        bn = self.norm
        if (not isinstance(bn, _BatchNorm) or bn.training or bn.running_mean is None):
            return None
        scale = torch.rsqrt(bn.running_var + bn.eps)  # (Cout,)
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = -bn.running_mean if self.conv.bias is None else self.conv.bias - bn.running_mean
        bias = bias * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        return self.conv.weight * scale.view(-1, 1, 1, 1), bias

    def norm_act(self, x: torch.Tensor) -> torch.Tensor:
        """The norm and activation after the convolution."""
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        if self.norm is not None and x.requires_grad:
            x = _GradLikeInput.apply(x)
        return x

    def linear_weight(self) -> torch.Tensor:
        """A 1x1 convolution's weight as a linear layer's, ``(out, in)`` (a view)."""
        if self.conv.kernel_size != (1, 1) or self.conv.groups != 1:
            raise ValueError('only an ungrouped 1x1 convolution is a linear layer')
        return self.conv.weight.flatten(1)


class ConvStem(BaseModule):
    """Stride-4 convolutional stem (spec §3); pads the image right/bottom to a
    multiple of 4 first.

    Args:
        in_channels (int): Image channels. Defaults to 3.
        embed_dims (int): Output channels ``C0``. Defaults to 64.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        fast_path (bool): On CPU, run each convolution in the memory format
            that is fastest for each pass (see
            :mod:`~mmvit3.models.conv_fast`), and hand on contiguous tokens.
            Defaults to True.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 64,
                 norm_cfg: dict = dict(type='BN'),
                 fast_path: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fast_path = fast_path
        half = embed_dims // 2
        # in training conv.0-2 run in NCHW, where oneDNN is fastest for
        # their narrow maps (a layout change would cost more than it saves);
        # conv.3 and conv.4 pick per pass (conv_fast). Inference runs all
        # five channels-last with the BatchNorms folded in.
        fast = dict(fast_path=fast_path, fast_backward=False)
        self.conv = nn.Sequential(
            ConvBNAct(in_channels, half, 3, 2, 1, norm_cfg=norm_cfg, **fast),
            ConvBNAct(half, half, 3, 1, 1, norm_cfg=norm_cfg, **fast),
            ConvBNAct(half, half, 3, 1, 1, norm_cfg=norm_cfg, **fast),
            ConvBNAct(half, 4 * embed_dims, 3, 2, 1, norm_cfg=norm_cfg, fast_path=fast_path),
            ConvBNAct(4 * embed_dims, embed_dims, 1, norm_cfg=norm_cfg, act=False,
                      fast_path=fast_path))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, HWShape]:
        """``(B, 3, H, W)`` image -> ``(B, N, C0)`` tokens and ``(ceil(H/4), ceil(W/4))``."""
        x = self.conv(pad_to_multiple(x, 4))  # (B, C0, H/4, W/4)
        x, hw_shape = grid_to_tokens(x)  # (B, N, C0)
        return (x.contiguous() if self.fast_path else x), hw_shape


class PatchMerging(BaseModule):
    """Stride-2 down-sampling between stages (spec §3): 1x1 expand, 3x3
    depth-wise stride 2, 1x1 project with BN; pads to even h, w first.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        expand_ratio (int): Hidden width over ``out_channels``. Defaults to 4.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        fast_path (bool): Run the 1x1 convolutions as linear layers on the
            tokens and the depth-wise one on a channels-last view (no layout
            copies; CPU depth-wise kernels are several times faster
            channels-last). Defaults to True.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 expand_ratio: int = 4,
                 norm_cfg: dict = dict(type='BN'),
                 fast_path: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fast_path = fast_path
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
        x = tokens_to_grid(x, hw_shape, channels_last=self.fast_path)
        x = pad_to_multiple(x, 2)  # (B, Cin, h', w'), h' and w' even
        if not self.fast_path:
            return grid_to_tokens(self.conv(x))
        expand, down, project = self.conv
        x, hw_shape = grid_to_tokens(x)  # (B, h' w', Cin), a view
        b, n, c = x.shape
        # ReLU in place on the 2D product, not on a 3D view of it (autograd
        # would replay that through CopySlices and AsStrided)
        x = F.linear(x.reshape(b * n, c), expand.linear_weight(), expand.conv.bias).relu_()
        x = down(tokens_to_grid(x.view(b, n, -1), hw_shape,
                                channels_last=True))  # (B, 4 Cout, h'/2, w'/2)
        x, hw_shape = grid_to_tokens(x)  # (B, N', 4 Cout), a view
        folded = None if torch.is_grad_enabled() else project._fold_norm()
        if folded is not None:  # inference with an eval-mode BatchNorm
            return F.linear(x, folded[0].flatten(1), folded[1]), hw_shape  # (B, N', Cout)
        x = F.linear(x, project.linear_weight(), project.conv.bias)  # (B, N', Cout)
        return grid_to_tokens(project.norm_act(tokens_to_grid(x, hw_shape, channels_last=True)))


class ConvFFN(BaseModule):
    """The block's MLP: fc1 -> GELU -> dropout -> ``u + dwc(u)`` -> GELU ->
    fc2 -> dropout (spec §2).

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Hidden channels.
        drop_rate (float): Dropout rate. Defaults to 0.
        fast_path (bool): Run everything after ``fc1`` as
            :class:`~mmvit3.models.ttt_fast.MlpTailFunction` (keeps one
            hidden tensor for backward instead of four).
            Defaults to True.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 drop_rate: float = 0.,
                 fast_path: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fast_path = fast_path
        self.drop_rate = drop_rate
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.dwc = nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1,
                             groups=hidden_dims)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
        return self.forward_hidden(self.fc1(x), hw_shape)

    @property
    def fast_tail(self) -> bool:
        """Whether :meth:`forward_hidden` runs the fused tail (no dropout)."""
        return self.fast_path and not (self.training and self.drop_rate > 0)

    def forward_hidden(self, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
        """Everything after ``fc1``: ``(B, N, hidden)`` -> ``(B, N, C)``."""
        if self.fast_tail:
            return mlp_tail_fast(x, self.dwc.weight, self.dwc.bias, self.fc2.weight,
                                 self.fc2.bias, hw_shape)  # (B, N, C)
        x = self.drop(self.act(x))
        x = x + grid_to_tokens(self.dwc(tokens_to_grid(x, hw_shape)))[0]
        x = self.act(x)
        return self.drop(self.fc2(x))  # (B, N, C)


class ViT3Block(BaseModule):
    """One ViT³ block (spec §2)::

        x = x + cpe(x)
        x = x + drop_path(attn(norm1(x)))
        x = x + drop_path(mlp(norm2(x)))

    Args:
        embed_dims (int): Channels.
        mlp_ratio (float): MLP hidden width over ``embed_dims``. Defaults to 4.
        drop_rate (float): Dropout rate in the MLP. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        with_cp (bool): Recompute the block in backward (gradient
            checkpointing) to save memory. Defaults to False.
        fast_path (bool): Fast, memory-lean implementation (same results);
            False runs the plain, spec-literal one. Defaults to True.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 fast_path: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        self.fast_path = fast_path
        self.cpe = nn.Conv2d(embed_dims, embed_dims, 3, padding=1,
                             groups=embed_dims)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = TTTMixer(embed_dims, fast_path=fast_path)
        self.drop_path = (DropPath(drop_path_rate)
                          if drop_path_rate > 0. else nn.Identity())
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = ConvFFN(embed_dims, int(embed_dims * mlp_ratio), drop_rate,
                           fast_path=fast_path)

    def _forward(self, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
        grid = tokens_to_grid(x, hw_shape, channels_last=self.fast_path)
        x = x + grid_to_tokens(self.cpe(grid))[0]
        if not self.fast_path:
            x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
            return x + self.drop_path(self.mlp(self.norm2(x), hw_shape))
        # norm1 -> qkv and norm2 -> fc1 fused: the normalised tokens are
        # recomputed in backward instead of kept
        qkv = layer_norm_linear(x, self.norm1, self.attn.qkv)  # (B, N, 3C + 3d)
        x = x + self.drop_path(self.attn.forward_qkv(qkv, hw_shape))
        hidden = layer_norm_linear(x, self.norm2, self.mlp.fc1)  # (B, N, 4C)
        return x + self.drop_path(self.mlp.forward_hidden(hidden, hw_shape))

    def forward(self, x: torch.Tensor, hw_shape: HWShape) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``."""
        hw_shape = (int(hw_shape[0]), int(hw_shape[1]))  # plain ints, also when traced
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        return self._forward(x, hw_shape)


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
        fast_path (bool): Fast implementation (see :class:`ViT3Block`).
            Defaults to True.
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
                 fast_path: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        drop_path_rates = drop_path_rates or [0.] * depth
        if len(drop_path_rates) != depth:
            raise ValueError(f'{len(drop_path_rates)} drop-path rates for '
                             f'{depth} blocks')
        self.blocks = ModuleList([
            ViT3Block(embed_dims, mlp_ratio, drop_rate, rate, with_cp, fast_path)
            for rate in drop_path_rates
        ])
        self.downsample = (PatchMerging(embed_dims, out_channels,
                                        norm_cfg=norm_cfg, fast_path=fast_path)
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


class ViT3(BaseModule):
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
        fast_path (bool): The fast, memory-lean implementation: custom
            autograd functions that recompute cheap intermediates, the inner
            step in float32 under autocast, channels-last convolutions. False
            runs the plain, spec-literal code (the test oracle; same results
            up to float rounding), e.g. for debugging. Switch later with
            :meth:`set_fast_path`. Defaults to True.
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

    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['t', 'tiny'], {
            'embed_dims': [64, 128, 320, 512],
            'depths': [1, 3, 9, 4]
        }),
        **dict.fromkeys(['s', 'small'], {
            'embed_dims': [64, 128, 320, 512],
            'depths': [2, 6, 18, 8]
        }),
        **dict.fromkeys(['b', 'base'], {
            'embed_dims': [96, 192, 448, 640],
            'depths': [2, 6, 18, 8]
        }),
    }

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
                 fast_path: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims: List[int] = list(self.arch_settings['embed_dims'])
        self.depths: List[int] = list(self.arch_settings['depths'])
        self.num_stages = len(self.depths)

        if isinstance(out_indices, int):
            out_indices = [out_indices]
        out_indices = [i + self.num_stages if i < 0 else i for i in out_indices]
        for i in out_indices:
            if not 0 <= i < self.num_stages:
                raise ValueError(f'out_indices {tuple(out_indices)} out of range '
                                 f'for {self.num_stages} stages')
        self.out_indices = tuple(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.patch_embed = ConvStem(in_channels, self.embed_dims[0], norm_cfg,
                                    fast_path)
        self.drop_after_stem = nn.Dropout(drop_rate)

        # stochastic depth rises linearly over all blocks
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
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
                    fast_path=fast_path))

        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.embed_dims[i]))

        self.apply(self._init_linear_and_norm)
        for m in self.modules():  # depth-wise weights' gradients as DDP expects
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                m.weight.register_hook(standard_strides_grad)
        self._freeze_stages()

    def set_fast_path(self, enabled: bool = True) -> 'ViT3':
        """Switch every part between the fast and the plain implementation."""
        for m in self.modules():
            if hasattr(m, 'fast_path'):
                m.fast_path = enabled
        return self

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise ValueError(
                    f'Unknown ViT3 arch {arch!r}; choose one of '
                    f'{sorted(set(cls.arch_zoo))} or pass a dict with '
                    f"'embed_dims' and 'depths'")
            return copy.deepcopy(cls.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        missing = {'embed_dims', 'depths'} - set(arch)
        if missing:
            raise ValueError(f'Custom ViT3 arch lacks {sorted(missing)}; it needs '
                             f"'embed_dims' and 'depths', got {arch}")
        dims, depths = list(arch['embed_dims']), list(arch['depths'])
        if not dims or len(dims) != len(depths):
            raise ValueError(f"'embed_dims' {dims} and 'depths' {depths} must be "
                             f'non-empty and of equal length (one per stage)')
        bad = [c for c in dims if c <= 0 or c % HEAD_DIM]
        if bad:
            raise ValueError(f"'embed_dims' must be positive multiples of "
                             f'{HEAD_DIM} (the head width), got {dims}')
        if any(n < 1 for n in depths):
            raise ValueError(f"'depths' must be at least 1 each, got {depths}")
        return {'embed_dims': dims, 'depths': depths}

    @staticmethod
    def _init_linear_and_norm(m: nn.Module) -> None:
        # Spec §4; convolutions, BN and the inner weights keep their own init.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0)

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', ...)`` through
        :func:`mmvit3.models.checkpoint.load_pretrained`; any other init_cfg
        goes to mmengine."""
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            from .checkpoint import load_pretrained
            load_pretrained(self, **{k: v for k, v in self.init_cfg.items()
                                     if k != 'type'})
            self._is_init = True
        else:
            super().init_weights()

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

    def _freeze_stages(self) -> None:
        frozen: List[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        for i in range(self.frozen_stages):
            frozen.append(self.layers[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        """Set train mode, keeping frozen stages (and BN, with ``norm_eval``)
        in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

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
            raise ValueError(
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
