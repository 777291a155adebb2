# UperNet with a plain ViT3-T backbone (blocks 2, 5, 8, 11 through
# MultiLevelNeck) on the synthetic shapes demo set (ADE20K layout): the H-ViT3
# segmentation demo (same data, head widths, schedule and optimizer) with the
# backbone swapped and the neck added; from random weights, on a CPU.
#
#   python tools/make_demo_data.py                 # writes data/demo/
#   python tools/train.py configs/demo/upernet_vit3_plain_demo.py
#   python tools/test.py configs/demo/upernet_vit3_plain_demo.py \
#       work_dirs/upernet_vit3_plain_demo/iter_120.pth
#
# Not a recipe for real data: the ADE20K configs are
# configs/upernet_vit3_plain_*_ade20k.py.
_base_ = './upernet_vit3_demo.py'

embed_dims = 192
neck_channels = 128
model = dict(
    backbone=dict(
        _delete_=True,
        type='PlainViT3',
        arch='tiny',  # the real plain ViT3-T, randomly initialised
        out_indices=(2, 5, 8, 11),
        drop_path_rate=0.0,
        with_cp=False),
    neck=dict(
        type='MultiLevelNeck',
        in_channels=[embed_dims] * 4,
        out_channels=neck_channels,
        scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[neck_channels] * 4),
    auxiliary_head=dict(in_channels=neck_channels))
