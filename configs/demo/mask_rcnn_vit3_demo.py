# Mask R-CNN with a ViT3-T backbone on the synthetic shapes demo set: trains
# and evaluates on a laptop CPU in about ten minutes, from random weights.
#
#   python tools/make_demo_data.py                 # writes data/demo/
#   python tools/train.py configs/demo/mask_rcnn_vit3_demo.py
#   python tools/test.py configs/demo/mask_rcnn_vit3_demo.py \
#       work_dirs/mask_rcnn_vit3_demo/iter_360.pth
#
# Not a recipe for real data: the COCO configs are configs/mask_rcnn_*.py.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
          '../_base_/mmvit3_runtime.py']
custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)

data_root = 'data/demo/'
classes = ('circle', 'square', 'triangle')
metainfo = dict(
    classes=classes, palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
img_scale = (256, 256)
max_iters = 360
neck_channels = 128

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViT3',
        arch='tiny',  # the real ViT3-T, randomly initialised
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        frozen_stages=-1,
        with_cp=False),
    # FPN and heads at 128 channels (256 for COCO): on a CPU they would
    # otherwise cost as much as the backbone
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=neck_channels),
    rpn_head=dict(in_channels=neck_channels, feat_channels=neck_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_channels),
        bbox_head=dict(
            in_channels=neck_channels,
            fc_out_channels=512,
            num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=neck_channels),
        mask_head=dict(
            num_convs=2,
            in_channels=neck_channels,
            conv_out_channels=neck_channels,
            num_classes=len(classes))),
    # fewer proposals / RoIs than for COCO: a few objects per small image
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# iteration-based schedule, evaluated (and saved) at the end
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=False,
        begin=50,
        end=max_iters)
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0),
    clip_grad=dict(max_norm=10.0, norm_type=2))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=max_iters,
        # mmengine deletes the oldest first: 2 so a kill mid-save leaves one
        max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=2)
randomness = dict(seed=0)
