# Copyright (c) mmvit3 authors. All rights reserved.
"""Puts the ViT3 backbone into the MMDetection and MMSegmentation model
registries, each only if that library is installed."""
import importlib
import importlib.util
import logging
from typing import List

from mmengine.logging import print_log

from .models import ViT3

#: The libraries whose ``<scope>.registry.MODELS`` receives ViT3.
SCOPES = ('mmdet', 'mmseg')


def register_models() -> List[str]:
    """Register :class:`ViT3` as ``'ViT3'`` in every installed library's
    ``MODELS``; returns the scopes it is registered in. Idempotent."""
    registered = []
    for scope in SCOPES:
        if importlib.util.find_spec(scope) is None:
            continue
        registry = importlib.import_module(f'{scope}.registry').MODELS
        existing = registry.module_dict.get('ViT3')
        if existing is None:
            registry.register_module(name='ViT3', module=ViT3)
        elif existing is not ViT3:
            print_log(f"{scope}.registry.MODELS already holds another 'ViT3' "
                      f'({existing.__module__}); mmvit3 left it in place',
                      logger='current', level=logging.WARNING)
            continue
        registered.append(scope)
    return registered
