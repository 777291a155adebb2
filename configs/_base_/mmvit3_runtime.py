# What every mmvit3 recipe adds to a run, through any tool that reads the
# config (this repository's tools, mmdet's / mmseg's own, mim):
# `import mmvit3` registers the ViT3 backbone and the hooks below.
custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)

custom_hooks = [
    # images load with LoadImageFromFileChecked: a bad file stops the run
    # naming it (top-level `skip_bad_images = True`: training skips it); the
    # saved config keeps LoadImageFromFile, as the inferencers expect
    dict(type='CheckedImageLoadingHook'),
]
