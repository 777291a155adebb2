# Copyright (c) mmvit3 authors. All rights reserved.
"""What both ViT³ backbones share: the arch table lookup, the ``impl``
switch for every part, the Linear / LayerNorm init, loading released weights
(``init_cfg=dict(type='Pretrained', ...)``), checked ``out_indices`` /
``frozen_stages``, and ``train()`` keeping frozen parts (and BatchNorms,
with ``norm_eval``) in eval mode."""
import copy
from typing import Any, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from ..safe_load import load_checkpoint_source, load_policy, set_opt_in_hint, trust_checkpoints
from .impl import check_impl
from .weights import BackboneLayout, FilterReport, checkpoint_filter_fn


def load_pretrained(model: nn.Module,
                    checkpoint: str,
                    key: Optional[str] = None,
                    prefix: Optional[str] = None,
                    trusted: bool = False,
                    map_location: Any = 'cpu') -> FilterReport:
    """Load released weights into a ViT3 or PlainViT3 backbone through the
    project's safe loader, refusing NaN / Inf weights, and log what was
    loaded, dropped and left untouched (:func:`~.weights.checkpoint_filter_fn`).

    This is what ``init_cfg=dict(type='Pretrained', checkpoint=..., key=...,
    prefix=..., trusted=...)`` on a backbone runs.

    Args:
        model (nn.Module): The backbone.
        checkpoint (str): Path or URL of the file (an http(s) URL is
            downloaded once into torch hub's folder), or any name mmengine's
            ``CheckpointLoader`` resolves.
        key (str, optional): Entry holding the weights; see
            :func:`~.weights.select_state_dict`.
        prefix (str, optional): Take only keys under this prefix.
        trusted (bool): Unpickle every Python object in the file: only for
            a file you trust. Defaults to False (the authors' files, with
            the yacs config of their ImageNet ones, load without it).
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
    """
    hint = (f"If you trust this file, set trusted=True in the backbone's "
            f"init_cfg, or convert it once into a plain weights file: "
            f"python tools/convert_checkpoint.py {checkpoint} OUT.pth --trusted")
    with trust_checkpoints(trusted or load_policy().trusted), set_opt_in_hint(hint):
        loaded = load_checkpoint_source(checkpoint, map_location)
    state_dict, report = checkpoint_filter_fn(loaded, model, key, prefix)
    model.load_state_dict(state_dict, strict=False)
    source = f"entry '{report.source_key}' of " if report.source_key else ''
    print_log(f'{model.weights_layout.name}: loaded {len(state_dict)} entries from '
              f'{source}{checkpoint}' + (f'\n{report.summary()}' if report.summary() else ''),
              logger='current')
    return report


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        value == value  # not NaN


class BackboneBase(BaseModule):
    """Base of the ViT³ backbones. A subclass sets ``weights_layout`` (its
    archs and file names, :mod:`.weights`), builds ``patch_embed`` and its
    stages, and says which module is stage ``i`` and which norm serves it
    (:meth:`_stage`, :meth:`_out_norm`)."""

    #: The backbone's files' layout and archs (:mod:`.weights`).
    weights_layout: BackboneLayout

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        """A copy of the arch table's entry ``arch``, or the dict ``arch``
        checked by the subclass's ``_check_arch``; raises naming the choices."""
        name, zoo = cls.__name__, cls.weights_layout.arch_zoo
        keys = [repr(k) for k in cls.weights_layout.arch_keys]
        keys = ' and '.join([', '.join(keys[:-1]), keys[-1]] if len(keys) > 1 else keys)
        if isinstance(arch, str):
            key = arch.lower()
            if key not in zoo:
                raise ConfigError(f'Unknown {name} arch {arch!r}; choose one of '
                                 f'{sorted(set(zoo))} or pass a dict with {keys}')
            return copy.deepcopy(zoo[key])
        if not isinstance(arch, dict):
            raise ConfigError(f'{name}: arch must be a str or a dict, got {arch!r}')
        missing = set(cls.weights_layout.arch_keys) - set(arch)
        if missing:
            raise ConfigError(f'Custom {name} arch lacks {sorted(missing)}; it needs '
                             f'{keys}, got {arch}')
        return cls._check_arch(arch)

    @classmethod
    def _check_arch(cls, arch: dict) -> dict:
        raise NotImplementedError

    def _check(self, **args) -> None:
        """Refuse an argument out of its range: ``name=(value, ok, what it
        must be)``, each named with its value in the message."""
        for name, (value, ok, expected) in args.items():
            if not ok:
                raise ConfigError(f'{type(self).__name__}: {name} must be {expected}, '
                                  f'got {value!r}')

    def _setup(self, impl: str, out_indices: Union[int, Sequence[int]], frozen_stages: int,
               count: int, unit: str, norm_eval: bool, with_cp: bool, in_channels: int,
               mlp_ratio: float, drop_rate: float, drop_path_rate: float) -> None:
        """Check and keep the settings every backbone takes: ``impl``;
        ``out_indices`` as non-negative indices below ``count`` (``unit``:
        what they count, in messages), ``frozen_stages`` in ``[-1, count]``
        and the other arguments in their ranges."""
        self.impl = check_impl(impl)
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        self._check(out_indices=(out_indices, isinstance(out_indices, (list, tuple)) and all(
            _is_int(i) for i in out_indices) and len(out_indices) > 0,
            'one index or a non-empty list of indices'))
        out_indices = [i + count if i < 0 else i for i in out_indices]
        for i in out_indices:
            if not 0 <= i < count:
                raise ConfigError(f'out_indices {tuple(out_indices)} out of range '
                                  f'for {count} {unit}')
        self._check(
            frozen_stages=(frozen_stages, _is_int(frozen_stages) and -1 <= frozen_stages <= count,
                           f'an integer in [-1, {count}]'),
            in_channels=(in_channels, _is_int(in_channels) and in_channels >= 1,
                         'a positive integer'),
            mlp_ratio=(mlp_ratio, _is_number(mlp_ratio) and mlp_ratio > 0, 'a positive number'),
            drop_rate=(drop_rate, _is_number(drop_rate) and 0 <= drop_rate < 1, 'in [0, 1)'),
            drop_path_rate=(drop_path_rate, _is_number(drop_path_rate)
                            and 0 <= drop_path_rate < 1, 'in [0, 1)'),
            norm_eval=(norm_eval, isinstance(norm_eval, bool), 'True or False'),
            with_cp=(with_cp, isinstance(with_cp, bool), 'True or False'))
        self.out_indices: Tuple[int, ...] = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

    def set_impl(self, impl: str):
        """Run ``impl`` (``'auto'``, ``'plain'`` or ``'fused'``) from the next
        forward on, in every part; returns the model."""
        check_impl(impl)
        for m in self.modules():
            if hasattr(m, 'impl'):
                m.impl = impl
        return self

    @staticmethod
    def _init_linear_and_norm(m: nn.Module) -> None:
        # Convolutions, BN and the inner weights keep their own init.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0)

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', ...)`` through
        :func:`load_pretrained`; any other init_cfg goes to mmengine."""
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            load_pretrained(self, **{k: v for k, v in self.init_cfg.items() if k != 'type'})
            self._is_init = True
        else:
            super().init_weights()

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """The layer depth of a parameter for layer-wise lr decay (as
        mmpretrain's backbones say it): the stem 0, the blocks above it (how,
        :meth:`_layer_id` says), the output norms and anything not under
        ``prefix`` on top.

        Args:
            param_name (str): The parameter's name.
            prefix (str): What the backbone's names start with in the whole
                model (e.g. ``'backbone.'``). Defaults to ``''``.

        Returns:
            tuple[int, int]: The layer id and the number of layers (blocks + 2).
        """
        num_layers = self.num_blocks + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        layer_id = self._layer_id(param_name[len(prefix):].split('.'))
        return (num_layers - 1 if layer_id is None else layer_id), num_layers

    def _layer_id(self, parts) -> Optional[int]:
        """The layer id of a parameter named ``'.'.join(parts)``, None on top."""
        raise NotImplementedError

    def _stage(self, index: int) -> nn.Module:
        """Stage (or block) ``index``, as ``frozen_stages`` counts."""
        raise NotImplementedError

    def _out_norm(self, index: int) -> nn.Module:
        """The norm that serves output ``index`` (one of ``out_indices``)."""
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        frozen = [self.patch_embed] if self.frozen_stages >= 0 else []
        for i in range(self.frozen_stages):
            frozen.append(self._stage(i))
            if i in self.out_indices:
                frozen.append(self._out_norm(i))
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
