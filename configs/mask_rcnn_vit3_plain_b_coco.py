# Mask R-CNN + plain ViT³-B with a simple feature pyramid, COCO 1x: the T
# recipe (MMDetection's projects/ViTDet, at 12 epochs) with the B backbone.
# No official result exists for this model.
_base_ = ['./mask_rcnn_vit3_plain_t_coco.py']

pretrained = 'https://cloud.tsinghua.edu.cn/f/c9e9bb09f85d449ab8cf/?dl=1'
embed_dims = 768

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        backbone_channel=embed_dims,
        in_channels=[embed_dims // 4, embed_dims // 2, embed_dims, embed_dims]))
