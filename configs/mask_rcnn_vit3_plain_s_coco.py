# Mask R-CNN + plain ViT³-S with a simple feature pyramid, COCO 1x: the T
# recipe (MMDetection's projects/ViTDet, at 12 epochs) with the S backbone.
# No official result exists for this model.
_base_ = ['./mask_rcnn_vit3_plain_t_coco.py']

pretrained = 'https://cloud.tsinghua.edu.cn/f/4ab59ca54b474dff9b70/?dl=1'
embed_dims = 384

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        backbone_channel=embed_dims,
        in_channels=[embed_dims // 4, embed_dims // 2, embed_dims, embed_dims]))
