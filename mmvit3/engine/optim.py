# Copyright (c) mmvit3 authors. All rights reserved.
"""Layer-wise learning-rate decay, as an mmengine optimizer-wrapper
constructor any backbone can use by saying each parameter's depth
(``get_layer_depth(name, prefix)``, as mmpretrain's backbones do)."""
import logging
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from ..errors import ConfigError


class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor (``custom_keys``, ``norm_decay_mult``
    and the other ``paramwise_cfg`` keys unchanged) plus layer-wise lr decay
    of the backbone: a parameter at depth ``i`` of ``L`` layers gets its lr
    times ``layer_decay_rate ** (L - 1 - i)``. The depths come from the
    backbone's ``get_layer_depth``; the neck and heads are on top (factor 1).

    Config::

        optim_wrapper = dict(
            constructor='LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.1),
            paramwise_cfg=dict(layer_decay_rate=0.7,
                               custom_keys={'norm': dict(decay_mult=0.)}))

    Args:
        optim_wrapper_cfg (dict): As for mmengine's constructor.
        paramwise_cfg (dict, optional): As for mmengine's constructor, with
            ``layer_decay_rate`` (float in (0, 1], defaults to 1: no decay).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        rate = paramwise_cfg.pop('layer_decay_rate', 1.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ConfigError(f'optim_wrapper.paramwise_cfg.layer_decay_rate must be a '
                              f'number in (0, 1], got {rate!r}')
        self.layer_decay_rate = float(rate)
        super().__init__(optim_wrapper_cfg, paramwise_cfg or None)
        if self.layer_decay_rate < 1 and not self.paramwise_cfg:
            self.paramwise_cfg = {'custom_keys': {}}  # one group per parameter

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        start = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        if prefix or self.layer_decay_rate == 1:  # the decay once, from the top
            return
        backbone = getattr(module, 'backbone', None)
        if not callable(getattr(backbone, 'get_layer_depth', None)):
            raise ConfigError(
                f'layer_decay_rate={self.layer_decay_rate} needs a backbone that says '
                f'each parameter\'s depth (get_layer_depth); '
                f'{type(backbone).__name__} does not')
        names = {id(p): n for n, p in module.named_parameters()}
        num_layers, lowest = None, 1.0
        for group in params[start:]:
            name = names[id(group['params'][0])]
            if not name.startswith('backbone.'):
                continue
            depth, num_layers = backbone.get_layer_depth(name, 'backbone.')
            scale = self.layer_decay_rate**(num_layers - 1 - depth)
            group['lr'] = group.get('lr', self.base_lr) * scale
            lowest = min(lowest, scale)
        print_log(f'layer-wise lr decay {self.layer_decay_rate} over {num_layers} backbone '
                  f'layers: lr x {lowest:.3g} (stem) to x 1 (neck and heads)',
                  logger='current', level=logging.INFO)
