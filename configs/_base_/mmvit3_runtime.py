# What every mmvit3 recipe adds to a run, through any tool that reads the
# config (this repository's tools, mmdet's / mmseg's own, mim; tools/train.py
# and tools/test.py add the same to configs without it): `import mmvit3`
# registers the ViT3 backbone and the hooks below. See docs/reliability.md.
custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)

custom_hooks = [
    # images load with LoadImageFromFileChecked: a bad file stops the run
    # naming it (top-level `skip_bad_images = True`: training skips it); the
    # saved config keeps LoadImageFromFile, as the inferencers expect
    dict(type='CheckedImageLoadingHook'),
    # the config keys trust_checkpoint / allow_nonfinite_weights /
    # allow_partial_checkpoint, --resume from the newest readable checkpoint,
    # checkpoints that do not fit the model refused, checkpoints saved by
    # write-then-rename
    dict(type='CheckpointSafetyHook'),
    dict(type='WorkDirLockHook'),  # one training run per work dir
    dict(type='NonFiniteLossHook'),  # a NaN / Inf loss stops training (patience 1, 10 with AMP)
    dict(type='DataCheckHook'),  # annotations and label maps checked before the run
    # compile=True compiles the backbone and neck for training (docs/export.md)
    dict(type='CompileHook'),
    # fp16=True in val_cfg / test_cfg (tools/test.py --amp) on CPU: bfloat16
    # autocast of the backbone and neck, heads in float32
    dict(type='AmpHook'),
]
