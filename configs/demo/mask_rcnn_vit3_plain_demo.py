# Mask R-CNN with a plain ViT3-T backbone and the simple feature pyramid on
# the synthetic shapes demo set: the H-ViT3 detection demo (same data, heads,
# schedule and optimizer) with the backbone and neck swapped; from random
# weights, on a CPU.
#
#   python tools/make_demo_data.py                 # writes data/demo/
#   python tools/train.py configs/demo/mask_rcnn_vit3_plain_demo.py
#   python tools/test.py configs/demo/mask_rcnn_vit3_plain_demo.py \
#       work_dirs/mask_rcnn_vit3_plain_demo/iter_360.pth
#
# Not a recipe for real data: the COCO configs are
# configs/mask_rcnn_vit3_plain_*_coco.py.
_base_ = './mask_rcnn_vit3_demo.py'

embed_dims = 192
norm_cfg = dict(type='LN2d', requires_grad=True)
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
        norm_cfg=norm_cfg))
