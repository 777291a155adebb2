# Copyright (c) mmvit3 authors. All rights reserved.
"""What mmvit3 adds to a run (mmengine only): safe checkpoint policy and
saving, one run per work dir, a stop on non-finite losses. Registered in
mmengine's root ``HOOKS`` (found from the mmdet / mmseg scopes through
their parent registry) by :func:`mmvit3.registration.register_hooks`."""
from .checkpointing import (SafeCheckpointHook, atomic_write_text,
                            checkpoint_problem, find_resumable_checkpoint)
from .hooks import (LOCK_NAME, CheckpointSafetyHook, DataCheckHook,
                    NonFiniteLossError, hold_work_dir, release_work_dir,
                    NonFiniteLossHook, WorkDirBusyError, WorkDirLockHook)

#: The hooks tools/train.py and tools/test.py give a run (they check the data
#: themselves, before building; configs/_base_/mmvit3_runtime.py also names
#: DataCheckHook for the libraries' own tools).
RUN_HOOKS = ('CheckpointSafetyHook', 'WorkDirLockHook', 'NonFiniteLossHook')
HOOK_CLASSES = {
    'SafeCheckpointHook': SafeCheckpointHook,
    'CheckpointSafetyHook': CheckpointSafetyHook,
    'WorkDirLockHook': WorkDirLockHook,
    'NonFiniteLossHook': NonFiniteLossHook,
    'DataCheckHook': DataCheckHook,
}

__all__ = [
    'SafeCheckpointHook', 'atomic_write_text', 'checkpoint_problem',
    'find_resumable_checkpoint', 'LOCK_NAME', 'CheckpointSafetyHook',
    'NonFiniteLossError', 'NonFiniteLossHook', 'WorkDirBusyError',
    'WorkDirLockHook', 'DataCheckHook', 'hold_work_dir', 'release_work_dir', 'RUN_HOOKS', 'HOOK_CLASSES'
]
