# UperNet + H-ViT³-B, ADE20K 512x512, 160k: the T recipe with the B
# backbone, drop path 0.5 and no AMP.
_base_ = ['./upernet_vit3_t_ade20k.py']

pretrained = 'https://cloud.tsinghua.edu.cn/f/1d0d7fb840254275b29d/?dl=1'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))

# full precision (the released S/B recipes use a plain OptimWrapper)
optim_wrapper = dict(type='OptimWrapper')
