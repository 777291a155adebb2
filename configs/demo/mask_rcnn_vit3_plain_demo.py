# Mask R-CNN with a plain ViT3-T backbone and the simple feature pyramid on
# the synthetic shapes demo set: the H-ViT3 detection demo (same data, heads
# and optimizer) with the backbone and neck swapped, for twice the iterations
# (each costs about half as much); from random weights, on a CPU.
# Expect box AP about 65 and mask AP about 62 (untrained: 0.0).
#
#   python tools/make_demo_data.py                 # writes data/demo/
#   python tools/train.py configs/demo/mask_rcnn_vit3_plain_demo.py
#   python tools/test.py configs/demo/mask_rcnn_vit3_plain_demo.py \
#       work_dirs/mask_rcnn_vit3_plain_demo/iter_720.pth
#
# Not a recipe for real data: the COCO configs are
# configs/mask_rcnn_vit3_plain_*_coco.py.
_base_ = './mask_rcnn_vit3_demo.py'

embed_dims = 192
max_iters = 720
model = dict(
    backbone=dict(
        _delete_=True,
        type='PlainViT3',
        arch='tiny',  # the real plain ViT3-T, randomly initialised
        out_indices=(11, ),
        drop_path_rate=0.0,
        with_cp=False),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=embed_dims,
        in_channels=[embed_dims // 4, embed_dims // 2, embed_dims, embed_dims],
        out_channels={{_base_.neck_channels}},
        num_outs=5,
        # no norms, as the H-ViT3 demo's FPN (the COCO configs keep ViTDet's
        # LN2d): from random weights they kept the RoI heads from learning
        norm_cfg=None))

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=False,
        begin=100,
        end=max_iters)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
