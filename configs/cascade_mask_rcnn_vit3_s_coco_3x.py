# Cascade Mask R-CNN + H-ViT³-S, COCO 3x: the T recipe with the S backbone.
_base_ = ['./cascade_mask_rcnn_vit3_t_coco_3x.py']

pretrained = 'pretrained/h_vit3_small.pth'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.4,  # as the Mask R-CNN S 3x recipe
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
