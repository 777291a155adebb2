# Mask R-CNN + H-ViT³-S, COCO 1x: the T recipe with the S backbone.
_base_ = ['./mask_rcnn_vit3_t_coco.py']

pretrained = 'https://cloud.tsinghua.edu.cn/f/3eeab8621a7f43929a87/?dl=1'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
