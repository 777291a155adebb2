# Mask R-CNN + H-ViT³-S, COCO 1x: the T recipe with the S backbone.
_base_ = ['./mask_rcnn_vit3_t_coco.py']

pretrained = 'pretrained/h_vit3_small.pth'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
