# Copyright (c) mmvit3 authors. All rights reserved.
"""The one module that registers: the ViT3 and PlainViT3 backbones into the
MMDetection and MMSegmentation model registries (and the simple feature
pyramid with its ``LN2d`` norm into MMDetection's), the checked image loader
into their transform registries, the hook that uses it into their hook
registries, each only if that library is installed; mmvit3's run hooks and
its layer-decay optimizer-wrapper constructor and bfloat16 optimizer wrapper
into mmengine's root registries; and the safe loader for every scheme of mmengine's
``CheckpointLoader`` (:func:`register_all`)."""
import importlib
import importlib.util
import logging
from typing import List, Sequence

from mmengine.logging import print_log

from .config import SCOPES
from .datasets import CHECKED_LOADER, LoadImageFromFileChecked
from .engine import (CHECKED_LOADING_HOOK, HOOK_CLASSES, BF16AmpOptimWrapper,
                     CheckedImageLoadingHook, LayerDecayOptimWrapperConstructor)
from .models import BACKBONES, LayerNorm2d, SimpleFPN
from .safe_load import register_checkpoint_loader


def _register(registry_name: str, name: str, cls: type,
              scopes: Sequence[str] = SCOPES) -> List[str]:
    """Register ``cls`` as ``name`` in every installed library's
    ``<scope>.registry.<registry_name>``; returns the scopes it is
    registered in. Leaves (with a warning) another class of that name in
    place. Idempotent."""
    registered = []
    for scope in scopes:
        if importlib.util.find_spec(scope) is None:
            continue
        registry = getattr(importlib.import_module(f'{scope}.registry'),
                           registry_name)
        existing = registry.module_dict.get(name)
        if existing is None:
            registry.register_module(name=name, module=cls)
        elif existing is not cls:
            print_log(f'{scope}.registry.{registry_name} already holds another '
                      f'{name!r} ({existing.__module__}); mmvit3 left it in '
                      f'place', logger='current', level=logging.WARNING)
            continue
        registered.append(scope)
    return registered


def _register_root(registry_name: str, name: str, cls: type) -> None:
    """Register ``cls`` as ``name`` in mmengine's root ``registry_name``,
    where the mmdet / mmseg registries find it through their parent. Leaves
    (with a warning) another class of that name in place. Idempotent."""
    registry = getattr(importlib.import_module('mmengine.registry'), registry_name)
    existing = registry.module_dict.get(name)
    if existing is None:
        registry.register_module(name=name, module=cls)
    elif existing is not cls:
        print_log(f'mmengine.registry.{registry_name} already holds another {name!r} '
                  f'({existing.__module__}); mmvit3 left it in place',
                  logger='current', level=logging.WARNING)


def register_models() -> List[str]:
    """Register every backbone of :data:`mmvit3.models.BACKBONES` (``'ViT3'``,
    ``'PlainViT3'``) in every installed library's ``MODELS``, and
    :class:`~mmvit3.models.SimpleFPN` / ``'LN2d'`` in MMDetection's;
    returns the scopes ``ViT3`` is registered in. Idempotent."""
    scopes = {name: _register('MODELS', name, cls) for name, cls in BACKBONES.items()}
    _register('MODELS', 'SimpleFPN', SimpleFPN, scopes=('mmdet', ))
    _register('MODELS', 'LN2d', LayerNorm2d, scopes=('mmdet', ))
    return scopes['ViT3']


def register_hooks() -> List[str]:
    """Register :class:`~mmvit3.engine.CheckedImageLoadingHook` in every
    installed library's ``HOOKS``, and mmvit3's run hooks
    (:mod:`mmvit3.engine`) in mmengine's root ``HOOKS``, where the mmdet /
    mmseg scopes find them through their parent registry; returns the run
    hooks' names. Idempotent."""
    _register('HOOKS', CHECKED_LOADING_HOOK, CheckedImageLoadingHook)
    for name, cls in HOOK_CLASSES.items():
        _register_root('HOOKS', name, cls)
    return list(HOOK_CLASSES)


def register_transforms() -> List[str]:
    """Register :class:`~mmvit3.datasets.LoadImageFromFileChecked` in every
    installed library's ``TRANSFORMS``; returns the scopes. Idempotent."""
    return _register('TRANSFORMS', CHECKED_LOADER, LoadImageFromFileChecked)


def register_optimizers() -> None:
    """Register :class:`~mmvit3.engine.LayerDecayOptimWrapperConstructor` in
    mmengine's root ``OPTIM_WRAPPER_CONSTRUCTORS`` and
    :class:`~mmvit3.engine.BF16AmpOptimWrapper` in its ``OPTIM_WRAPPERS``
    (mmdet's and mmseg's find them there). Idempotent."""
    _register_root('OPTIM_WRAPPER_CONSTRUCTORS', 'LayerDecayOptimWrapperConstructor',
                   LayerDecayOptimWrapperConstructor)
    _register_root('OPTIM_WRAPPERS', 'BF16AmpOptimWrapper', BF16AmpOptimWrapper)


def register_all() -> List[str]:
    """Everything above, and the safe checkpoint loader
    (:func:`mmvit3.safe_load.register_checkpoint_loader`); returns the
    scopes ``ViT3`` is registered in. What ``import mmvit3`` runs."""
    scopes = register_models()
    register_transforms()
    register_hooks()
    register_optimizers()
    register_checkpoint_loader()
    return scopes
