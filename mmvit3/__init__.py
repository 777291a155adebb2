# Copyright (c) mmvit3 authors. All rights reserved.
"""mmvit3: the ViT³ (Vision Test-Time Training) backbone for MMDetection and
MMSegmentation.

``import mmvit3`` (or ``custom_imports=dict(imports=['mmvit3'])`` in a config)
registers ``ViT3`` and ``PlainViT3`` (and, for MMDetection, the ``SimpleFPN``
neck) in the model registries of the installed libraries,
``LoadImageFromFileChecked`` in their transform registries,
``CheckedImageLoadingHook`` and mmvit3's run hooks (:mod:`mmvit3.engine`) in
the hook registries, and a safe loader for every scheme of mmengine's
``CheckpointLoader``.
"""
from .models import (PlainViT3, SimpleFPN, ViT3, checkpoint_filter_fn,
                     load_pretrained)
from .kernels import blocks as _fused_blocks  # noqa: F401  (registers the fused kernels)
from .registration import register_hooks, register_models, register_transforms
from .safe_load import (CorruptCheckpointError, NonFiniteCheckpointError,
                        UnsafeCheckpointError, load_checkpoint_file,
                        register_checkpoint_loader, trust_checkpoints)
from .version import __version__

REGISTERED_SCOPES = register_models()
register_transforms()
register_hooks()
register_checkpoint_loader()

__all__ = [
    'ViT3', 'PlainViT3', 'SimpleFPN', 'checkpoint_filter_fn', 'load_pretrained',
    'load_checkpoint_file', 'UnsafeCheckpointError', 'CorruptCheckpointError',
    'NonFiniteCheckpointError', 'trust_checkpoints', 'register_models',
    'register_hooks',
    'register_transforms', 'REGISTERED_SCOPES',
    '__version__'
]
