# Mask R-CNN + H-ViT³-B, COCO 1x: the T recipe with the B backbone.
_base_ = ['./mask_rcnn_vit3_t_coco.py']

pretrained = 'https://cloud.tsinghua.edu.cn/f/1d0d7fb840254275b29d/?dl=1'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
