# UperNet + plain ViT³-T, ADE20K 512x512, 160k iterations.
# No official result exists for this model: the authors released plain ViT³
# for ImageNet classification only. The recipe is MMSegmentation's
# vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py with the backbone
# swapped: blocks 2, 5, 8 and 11 (stride 16) through MultiLevelNeck (scales
# 4, 2, 1, 0.5) into UperNet, auxiliary FCN head on the last, AdamW 6e-5 / wd
# 0.01 with no decay on norm parameters, linear warm-up 1500 iterations from
# 1e-6x then poly to 0, 2 images per GPU x 8 GPUs, drop path 0.1, no AMP.
_base_ = [
    'mmseg::vit/vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/mmvit3_runtime.py'
]

# The authors' ImageNet-1K plain ViT³-T weights (their link; downloaded once
# into torch hub's folder, loaded safely); a local copy: --cfg-options
# model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://cloud.tsinghua.edu.cn/f/e12d1bd1c20c4e06a2da/?dl=1'
embed_dims = 192

model = dict(
    pretrained=None,  # the backbone loads its weights through init_cfg
    backbone=dict(
        _delete_=True,
        type='PlainViT3',
        arch='tiny',
        out_indices=(2, 5, 8, 11),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4, num_classes=150),
    auxiliary_head=dict(in_channels=embed_dims, num_classes=150))
# Inherited: AdamW(lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01) with
# custom_keys 'norm' -> decay_mult 0 (the backbone's LayerNorms), LinearLR +
# PolyLR, train batch 2, val batch 1, 160k iterations, whole-image test.

# the total batch the lr was set for: 2 images x 8 GPUs (--auto-scale-lr
# scales the lr by your total / 16)
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The recipe followed has no layer-wise lr decay (MMSegmentation's BEiT UperNet
# recipes use 0.9, its MAE ones 0.65); one key switches it on:
# --cfg-options optim_wrapper.paramwise_cfg.layer_decay_rate=0.9
optim_wrapper = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0))
