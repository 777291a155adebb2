# Cascade Mask R-CNN + H-ViT³-T, COCO 3x (36 epochs). New here: the authors
# released no cascade model, and no result is claimed. The recipe is
# MMDetection's
# convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py
# (three cascade stages with 4conv1fc GIoU box heads and SyncBN, DETR-style
# multi-scale resize + crop, 36 epochs with steps at 27 and 33, AdamW 2e-4 /
# wd 0.05, AMP, 2 images per GPU x 8 GPUs) with the backbone swapped. What
# changes for ViT³: the H-ViT³ backbone as in the Mask R-CNN 3x recipe
# (drop path 0.3, gradient checkpointing, no weight decay on its norms), and
# no layer-wise lr decay (ConvNeXt's 0.7 over its 6 stage groups has no
# H-ViT³ counterpart; --cfg-options optim_wrapper.paramwise_cfg.layer_decay_rate
# switches decay on, by block).
_base_ = [
    'mmdet::convnext/'
    'cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'
]

# The authors' ImageNet-1K H-ViT³-T weights (their link; downloaded once into
# torch hub's folder, loaded safely); a local copy: --cfg-options
# model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://cloud.tsinghua.edu.cn/f/f0c7c73ceabe49b7b161/?dl=1'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViT3',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=1.0,
        custom_keys={'norm': dict(decay_mult=0.)}))
# lr 2e-4 is for 2 images x 8 GPUs (the recipe's auto_scale_lr
# base_batch_size 16): --auto-scale-lr scales it by total / 16

# What configs/_base_/mmvit3_runtime.py adds to every recipe (it cannot be a
# second base here: the ConvNeXt recipe sets custom_imports too).
custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)
custom_hooks = [
    dict(type='CheckedImageLoadingHook'),
    dict(type='CheckpointSafetyHook'),
    dict(type='WorkDirLockHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='DataCheckHook'),
    dict(type='CompileHook'),
    dict(type='AmpHook'),
]
