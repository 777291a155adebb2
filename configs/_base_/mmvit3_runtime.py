# What mmvit3 adds to a run, for any tool that builds an mmengine Runner
# (mmdet's / mmseg's own tools too; tools/train.py and tools/test.py add the
# same): inherit it next to the library bases,
#     _base_ = ['mmdet::...', '../_base_/mmvit3_runtime.py']
# CheckpointSafetyHook: the config keys trust_checkpoint /
#   allow_nonfinite_weights / allow_partial_checkpoint, --resume from the
#   newest readable checkpoint, checkpoints that do not fit the model refused,
#   checkpoints saved by write-then-rename; WorkDirLockHook: one training run
#   per work dir; NonFiniteLossHook: a NaN / Inf loss stops training;
#   DataCheckHook: annotations and label maps checked before the run.
# See docs/reliability.md.
custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)
custom_hooks = [
    dict(type='CheckpointSafetyHook'),
    dict(type='WorkDirLockHook'),
    dict(type='NonFiniteLossHook'),  # patience: 1, or 10 with AMP
    dict(type='DataCheckHook'),
]
