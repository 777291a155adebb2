# Copyright (c) mmvit3 authors. All rights reserved.
"""mmvit3: the ViT³ (Vision Test-Time Training) backbones for MMDetection and
MMSegmentation.

``import mmvit3`` (or ``custom_imports=dict(imports=['mmvit3'])`` in a config)
registers ``ViT3`` and ``PlainViT3`` (and, for MMDetection, the ``SimpleFPN``
neck) in the model registries of the installed libraries,
``LoadImageFromFileChecked`` in their transform registries,
``CheckedImageLoadingHook`` and mmvit3's run hooks (:mod:`mmvit3.engine`) in
the hook registries, and a safe loader for every scheme of mmengine's
``CheckpointLoader`` (:mod:`mmvit3.registration`). docs/architecture.md maps
the package.
"""
from .errors import (CheckpointMismatchError, CorruptCheckpointError, MMViT3Error,
                     NonFiniteCheckpointError, UnsafeCheckpointError)
from .models import PlainViT3, SimpleFPN, ViT3, checkpoint_filter_fn, load_pretrained
from .registration import register_all, register_hooks, register_models, register_transforms
from .safe_load import load_checkpoint_file, trust_checkpoints
from .version import __version__

REGISTERED_SCOPES = register_all()

__all__ = [
    'ViT3', 'PlainViT3', 'SimpleFPN', 'checkpoint_filter_fn', 'load_pretrained',
    'load_checkpoint_file', 'MMViT3Error', 'UnsafeCheckpointError', 'CorruptCheckpointError',
    'NonFiniteCheckpointError', 'CheckpointMismatchError', 'trust_checkpoints',
    'register_all', 'register_models', 'register_hooks', 'register_transforms',
    'REGISTERED_SCOPES', '__version__'
]
