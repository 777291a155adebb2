# Mask R-CNN + H-ViT³-B, COCO 1x: the T recipe with the B backbone.
_base_ = ['./mask_rcnn_vit3_t_coco.py']

pretrained = 'pretrained/h_vit3_base.pth'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
