# UperNet with a ViT3-T backbone on the synthetic shapes demo set (ADE20K
# layout): trains and evaluates on a laptop CPU in a few minutes, from
# random weights.
#
#   python tools/make_demo_data.py                 # writes data/demo/
#   python tools/train.py configs/demo/upernet_vit3_demo.py
#   python tools/test.py configs/demo/upernet_vit3_demo.py \
#       work_dirs/upernet_vit3_demo/iter_120.pth
#
# Not a recipe for real data: the ADE20K configs are configs/upernet_*.py.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',  # noqa
    '../_base_/mmvit3_runtime.py'
]

data_root = 'data/demo/ade/'
# label 0 is the background, a class the model learns like the shapes (so it
# can say where there is no shape); pictures leave it unpainted
classes = ('background', 'circle', 'square', 'triangle')
metainfo = dict(
    classes=classes,
    palette=[[120, 120, 120], [220, 20, 60], [0, 128, 255], [60, 180, 75]])
# the background covers about nine pixels in ten: weighted down, so that a
# short run learns the shapes instead of calling everything background
class_weight = [0.2, 1.0, 1.0, 1.0]
max_iters = 120
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN when not distributed

# the demo images (256x256 unless made with another --size) are used as they
# are: no resizing or cropping, batches padded to a multiple of 32, the
# padding labelled background (mmseg's CrossEntropyLoss with class_weight
# fails on ignored (255) labels; the demo data has none)
data_preprocessor = dict(size=None, size_divisor=32, seg_pad_val=0)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='ViT3',
        arch='tiny',  # the real ViT3-T, randomly initialised
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        with_cp=False),
    # 128 / 64 channels (512 / 256 for ADE20K): cheap enough for a CPU
    decode_head=dict(
        in_channels=[64, 128, 320, 512],
        channels=128,
        num_classes=len(classes),
        norm_cfg=norm_cfg,
        loss_decode=dict(class_weight=class_weight)),
    auxiliary_head=dict(
        in_channels=320,
        channels=64,
        num_classes=len(classes),
        norm_cfg=norm_cfg,
        loss_decode=dict(class_weight=class_weight)))

# labels: 0 = background, 1..3 = the shapes (the label files' own values)
dataset_type = 'BaseSegDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs')
]
dataset_cfg = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        **dataset_cfg,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        **dataset_cfg,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[[
            dict(type='RandomFlip', prob=0., direction='horizontal'),
            dict(type='RandomFlip', prob=1., direction='horizontal')
        ], [dict(type='LoadAnnotations', reduce_zero_label=False)],
                    [dict(type='PackSegInputs')]])
]

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=30,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=max_iters,
        # mmengine deletes the oldest first: 2 so a kill mid-save leaves one
        max_keep_ckpts=2))
randomness = dict(seed=0)
