# Mask R-CNN + plain ViT³-T with a simple feature pyramid, COCO 1x (12 epochs).
# No official result exists for this model: the authors released plain ViT³
# for ImageNet classification only. The recipe follows MMDetection's
# projects/ViTDet (Mask R-CNN, ViT-B): the last block's stride-16 map into
# SimpleFPN with LN2d norms, a 2-conv RPN head, a 4conv1fc box head and a mask
# head with LN2d, large-scale jitter (1024x1024, scale 0.1-2.0), AdamW 1e-4 /
# wd 0.1, AMP, 4 images per GPU (ViTDet: 16 GPUs, total 64), drop path 0.1,
# 250-iteration warm-up, layer-wise lr decay 0.7 over the 12 blocks (ViTDet's
# LayerDecayOptimizerConstructor; here mmvit3's LayerDecayOptimWrapperConstructor:
# the patch embedding at depth 0, block i at i + 1, neck and heads undecayed);
# but the 1x schedule (12 epochs, steps at 8 and 11) instead of ViTDet's 100
# epochs. Norm parameters of the backbone have no weight decay.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    './_base_/mmvit3_runtime.py'
]

# The authors' ImageNet-1K plain ViT³-T weights (their link; downloaded once
# into torch hub's folder, loaded safely); a local copy: --cfg-options
# model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://cloud.tsinghua.edu.cn/f/e12d1bd1c20c4e06a2da/?dl=1'

embed_dims = 192
norm_cfg = dict(type='LN2d', requires_grad=True)
image_size = (1024, 1024)

model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[
            dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
        ]),
    backbone=dict(
        _delete_=True,
        type='PlainViT3',
        arch='tiny',
        out_indices=(11, ),
        drop_path_rate=0.1,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=embed_dims,
        in_channels=[embed_dims // 4, embed_dims // 2, embed_dims, embed_dims],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Large-scale jitter as in ViTDet; any test size works (the backbone pads to
# multiples of 16), so the test image is resized, not padded, to 1024.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(batch_size=4, num_workers=8,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=250),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]

# 'norm' matches the backbone's LayerNorms (norm1 / norm2 of every block and
# the output norm 'norm'); the LN2d layers of the neck and heads ('ln') keep
# the decay, as in ViTDet's mmdet project.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.1),
    paramwise_cfg=dict(
        layer_decay_rate=0.7, custom_keys={'norm': dict(decay_mult=0.)}))

# ViTDet's learning rate is for 64 images per step (16 GPUs x 4).
auto_scale_lr = dict(base_batch_size=64)
