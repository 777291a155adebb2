# UperNet + H-ViT³-S, ADE20K 512x512, 160k: the T recipe with the S
# backbone, drop path 0.4 and no AMP.
_base_ = ['./upernet_vit3_t_ade20k.py']

pretrained = 'https://cloud.tsinghua.edu.cn/f/3eeab8621a7f43929a87/?dl=1'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

# full precision (the released S/B recipes use a plain OptimWrapper)
optim_wrapper = dict(type='OptimWrapper')
