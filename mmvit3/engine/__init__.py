# Copyright (c) mmvit3 authors. All rights reserved.
"""What mmvit3 adds to a run, as mmengine hooks that work through any tool
that builds a Runner: checked image loading, safe checkpoint policy and
saving, the fit of a checkpoint to its model, one run per work dir, a stop
on non-finite losses, a check of the annotations, ``compile=True``
as a detector trains with it and ``fp16=True`` test loops on CPU; layer-wise
lr decay (:class:`LayerDecayOptimWrapperConstructor`) and bfloat16 training
on any device (:class:`BF16AmpOptimWrapper`).
:mod:`mmvit3.registration` puts the hooks into the registries."""
from .amp import FEATURE_PARTS, AmpHook, BF16AmpOptimWrapper, feature_autocast
from .compile import CompileHook, compile_for_training
from .checkpointing import (SafeCheckpointHook, atomic_write_text, checkpoint_problem,
                            find_resumable_checkpoint)
from .fit import check_has_weights, check_model_checkpoint
from .optim import LayerDecayOptimWrapperConstructor
from .hooks import CheckpointSafetyHook, DataCheckHook, NonFiniteLossHook
from .image_hook import CHECKED_LOADING_HOOK, CheckedImageLoadingHook
from .workdir import (LOCK_NAME, WorkDirLockHook, check_new_run, earlier_checkpoints,
                      hold_work_dir, release_work_dir)

#: The hooks tools/train.py and tools/test.py give a run (they check the data
#: themselves, before building; configs/_base_/mmvit3_runtime.py also names
#: DataCheckHook for the libraries' own tools).
RUN_HOOKS = ('CheckpointSafetyHook', 'WorkDirLockHook', 'NonFiniteLossHook', 'CompileHook',
             'AmpHook')
#: mmvit3's hooks for mmengine's root ``HOOKS``, by registered name.
HOOK_CLASSES = {
    cls.__name__: cls
    for cls in (SafeCheckpointHook, CheckpointSafetyHook, WorkDirLockHook, NonFiniteLossHook,
                DataCheckHook, CompileHook, AmpHook)
}

__all__ = [
    'SafeCheckpointHook', 'atomic_write_text', 'checkpoint_problem',
    'find_resumable_checkpoint', 'check_has_weights', 'check_model_checkpoint',
    'CheckpointSafetyHook', 'DataCheckHook', 'NonFiniteLossHook', 'CHECKED_LOADING_HOOK',
    'CheckedImageLoadingHook', 'LOCK_NAME', 'WorkDirLockHook', 'check_new_run',
    'earlier_checkpoints', 'hold_work_dir',
    'release_work_dir', 'RUN_HOOKS', 'HOOK_CLASSES', 'CompileHook', 'compile_for_training',
    'LayerDecayOptimWrapperConstructor', 'FEATURE_PARTS', 'AmpHook', 'BF16AmpOptimWrapper',
    'feature_autocast'
]
