# UperNet + H-ViT³-T, ADE20K 512x512, 160k iterations.
# The authors' released recipe (docs/model.md, "Training recipes"): the
# stock MMSegmentation 1.x UperNet-Swin-T ADE20K config (AdamW 6e-5 / wd 0.01
# with no decay on norm params, linear warm-up 1500 iters from 1e-6x then
# poly to 0, 2 images per GPU x 8 GPUs, standard ADE20K pipeline, whole-image
# test) with the backbone swapped; AMP for T.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',  # noqa: E501
    './_base_/mmvit3_runtime.py'
]

# The authors' ImageNet-1K H-ViT³-T weights (their link; downloaded once into
# torch hub's folder, loaded safely); a local copy: --cfg-options
# model.backbone.init_cfg.checkpoint=PATH
pretrained = 'https://cloud.tsinghua.edu.cn/f/f0c7c73ceabe49b7b161/?dl=1'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViT3',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    # auxiliary FCN head on stage 2 (C_2 channels)
    auxiliary_head=dict(in_index=2, in_channels=320, num_classes=150))

# Inherited from the Swin base: AdamW(lr=6e-5, betas=(0.9, 0.999),
# weight_decay=0.01) with custom_keys 'norm' -> decay_mult 0 (all backbone
# LayerNorm/BN params; the heads' BN layers are named 'bn' and keep decay, as
# released), LinearLR(1e-6, 0-1500) + PolyLR(power 1, eta_min 0, 1500-160k),
# train batch 2, val batch 1, 160k iterations.  Only T used AMP.
# Layer-wise lr decay is off, as released; one key switches it on:
# --cfg-options optim_wrapper.paramwise_cfg.layer_decay_rate=0.9
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0))
# lr 6e-5 is for 2 images x 8 GPUs; --auto-scale-lr scales it by total / 16
auto_scale_lr = dict(enable=False, base_batch_size=16)
