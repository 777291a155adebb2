# Mask R-CNN + H-ViT³-T, COCO 1x (12 epochs).
# The authors' released recipe (docs/model.md, "Training recipes"): stock
# MMDetection 3.x Mask R-CNN R-50-FPN with the backbone swapped; AdamW 2e-4 /
# wd 0.05 (no decay on norm params), AMP, gradient checkpointing, 4 images per
# GPU x 8 GPUs, multi-scale (DETR-style) training.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    './_base_/mmvit3_runtime.py'
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
        drop_path_rate=0.1,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))

# Multi-scale training: flip, then either a random short side in 480..800
# (step 32) or resize {400, 500, 600} -> absolute-range crop 384-600 -> the
# same multi-scale resize.  Test pipeline: stock (1333, 800) keep ratio.
ms_scales = [(s, 1333) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_scales,
                  keep_ratio=True)],
            [
                dict(type='RandomChoiceResize',
                     scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range',
                     crop_size=(384, 600), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales,
                     keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
# lr 2e-4 is for 4 images x 8 GPUs; --auto-scale-lr scales it by total / 32
auto_scale_lr = dict(enable=False, base_batch_size=32)
val_dataloader = dict(batch_size=2)
test_dataloader = val_dataloader

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]

# 'norm' matches every norm parameter of the backbone (norm1/norm2 LayerNorms,
# output norms norm0-3, stem / patch-merging BN: '...conv.X.norm.*'); the
# Mask R-CNN neck and heads have no norm layers.
# Layer-wise lr decay is off, as released; one key switches it on:
# --cfg-options optim_wrapper.paramwise_cfg.layer_decay_rate=0.9
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0002,
        betas=(0.9, 0.999),
        weight_decay=0.05),
    paramwise_cfg=dict(
        layer_decay_rate=1.0, custom_keys={'norm': dict(decay_mult=0.)}))
