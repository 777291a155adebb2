# UperNet + plain ViT³-B, ADE20K 512x512, 160k iterations: the T recipe
# (MMSegmentation's DeiT + MultiLevelNeck + UperNet) with the B backbone.
# No official result exists for this model.
_base_ = ['./upernet_vit3_plain_t_ade20k.py']

pretrained = 'https://cloud.tsinghua.edu.cn/f/c9e9bb09f85d449ab8cf/?dl=1'
embed_dims = 768

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
