# Copyright (c) mmvit3 authors. All rights reserved.
"""The models the benchmark times: the table of names (registry config,
label, FPN widths), the two reference models written here (a global-attention
ViT-S and DeiT), and how a name becomes a backbone or a Mask R-CNN detector
with its data samples."""
from typing import Dict

#: name -> (registry scope, backbone config, output widths for the FPN)
BACKBONES: Dict[str, tuple] = {
    'vit3-t': ('mmdet', dict(type='ViT3', arch='tiny'), [64, 128, 320, 512]),
    'vit3-s': ('mmdet', dict(type='ViT3', arch='small'), [64, 128, 320, 512]),
    'vit3-b': ('mmdet', dict(type='ViT3', arch='base'), [96, 192, 448, 640]),
    'vit3-t-plain': ('mmdet', dict(type='ViT3', arch='tiny', impl='plain'),
                     [64, 128, 320, 512]),
    'swin-t': ('mmdet', dict(type='SwinTransformer'), [96, 192, 384, 768]),
    'r50': ('mmdet', dict(type='ResNet', depth=50), [256, 512, 1024, 2048]),
    'vit-s': (None, None, None),  # GlobalViT below: single-scale, no detector
    # plain (stride-16, single-scale) models: backbone level only
    'plain-vit3-t': ('mmdet', dict(type='PlainViT3', arch='tiny'), None),
    'plain-vit3-s': ('mmdet', dict(type='PlainViT3', arch='small'), None),
    'deit-t': (None, dict(embed_dims=192, num_heads=3, naive=False), None),
    'deit-s': (None, dict(embed_dims=384, num_heads=6, naive=False), None),
    'deit-t-naive': (None, dict(embed_dims=192, num_heads=3, naive=True), None),
    'deit-s-naive': (None, dict(embed_dims=384, num_heads=6, naive=True), None),
}
SINGLE_SCALE = ('vit-s', 'plain-vit3-t', 'plain-vit3-s', 'deit-t', 'deit-s',
                'deit-t-naive', 'deit-s-naive')
LABELS = {
    'vit3-t': 'H-ViT3-T', 'vit3-s': 'H-ViT3-S', 'vit3-b': 'H-ViT3-B',
    'vit3-t-plain': 'H-ViT3-T (plain path)', 'swin-t': 'Swin-T',
    'r50': 'ResNet-50', 'vit-s': 'ViT-S/16 (global attention)',
    'plain-vit3-t': 'plain ViT3-T', 'plain-vit3-s': 'plain ViT3-S',
    'deit-t': 'DeiT-T (SDPA)', 'deit-s': 'DeiT-S (SDPA)',
    'deit-t-naive': 'DeiT-T (written-out attention)',
    'deit-s-naive': 'DeiT-S (written-out attention)',
}
#: the papers' plain-model comparison: sizes, and the ratios they report
#: (plain ViT3-T against DeiT-T: speed-up and memory share)
PAPER_SIZES = {(1248, 1248): 'ViT3 paper: 4.6x faster, 9.7% of the memory',
               (1280, 1280): 'Vision-TTT paper (its own TTT-T): 4.72x faster, '
                             '88.9% less memory'}
DET_BASE = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
DEFAULT_MODELS = ['vit3-t', 'vit3-s', 'vit3-b', 'vit3-t-plain', 'swin-t',
                  'r50', 'vit-s']
DEFAULT_SIZES = ['512', '800x1344', '1024', '1600x2688', '2048']
#: the issue's reference sizes (detection inputs, 1x and 4x the pixels)
REF_SIZE, BIG_SIZE = (800, 1344), (1600, 2688)


def global_vit(embed_dims: int = 384, depth: int = 12, num_heads: int = 6):
    """ViT-S/16 with global attention (torch's ``TransformerEncoderLayer``,
    scaled-dot-product attention): patch embedding, a learned 32x32 position
    table resized to the input grid, pre-norm blocks; returns the stride-16
    feature map. 22.0M parameters, against 28.2M for H-ViT3-T."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class GlobalViT(nn.Module):

        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, embed_dims, 16, 16)
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_dims, 32, 32))
            layer = nn.TransformerEncoderLayer(
                embed_dims, num_heads, 4 * embed_dims, dropout=0.,
                activation='gelu', batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth,
                                                enable_nested_tensor=False)
            self.norm = nn.LayerNorm(embed_dims)

        def forward(self, x):
            x = self.patch_embed(x)  # (B, C, H/16, W/16)
            b, c, h, w = x.shape
            pos = F.interpolate(self.pos_embed, size=(h, w), mode='bilinear',
                                align_corners=False)
            x = (x + pos).flatten(2).transpose(1, 2)  # (B, N, C)
            x = self.norm(self.blocks(x))
            return (x.transpose(1, 2).reshape(b, c, h, w), )  # (B, C, h, w)

    return GlobalViT()


def deit(embed_dims: int, num_heads: int, naive: bool, depth: int = 12):
    """DeiT/16 (patch 16, class token, learned 14x14 position table resized
    to the input grid, pre-norm blocks of global multi-head attention and a
    4x MLP, LayerNorm eps 1e-6), at DeiT-T (192, 3 heads) or DeiT-S (384, 6)
    width; attention through torch's ``scaled_dot_product_attention`` or, with
    ``naive``, written out (``softmax(q k^T / sqrt(d)) v``, the N x N matrix
    held). Returns the stride-16 map of the patch tokens."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):

        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
            self.qkv = nn.Linear(embed_dims, 3 * embed_dims)
            self.proj = nn.Linear(embed_dims, embed_dims)
            self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(embed_dims, 4 * embed_dims), nn.GELU(),
                                     nn.Linear(4 * embed_dims, embed_dims))

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
            if naive:
                attn = (q @ k.transpose(-2, -1)) * q.shape[-1]**-0.5  # (B, H, N, N)
                out = attn.softmax(dim=-1) @ v
            else:
                out = F.scaled_dot_product_attention(q, k, v)
            x = x + self.proj(out.transpose(1, 2).reshape(b, n, c))
            return x + self.mlp(self.norm2(x))

    class DeiT(nn.Module):

        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, embed_dims, 16, 16)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_dims, 14, 14))
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.norm = nn.LayerNorm(embed_dims, eps=1e-6)

        def forward(self, x):
            x = self.patch_embed(x)  # (B, C, H/16, W/16)
            b, c, h, w = x.shape
            pos = F.interpolate(self.pos_embed, size=(h, w), mode='bicubic',
                                align_corners=False)
            x = torch.cat([self.cls_token.expand(b, -1, -1),
                           (x + pos).flatten(2).transpose(1, 2)], dim=1)  # (B, 1 + N, C)
            for block in self.blocks:
                x = block(x)
            x = self.norm(x)[:, 1:]
            return (x.transpose(1, 2).reshape(b, c, h, w), )  # (B, C, h, w)

    return DeiT()


def build(name: str, level: str):
    """The backbone, or the Mask R-CNN detector with that backbone."""
    scope, backbone, widths = BACKBONES[name]
    if name in SINGLE_SCALE and level != 'backbone':
        raise ValueError(f'{name} is single-scale: backbone level only')
    if name == 'vit-s':
        return global_vit()
    if name.startswith('deit'):
        return deit(**backbone)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    if level == 'backbone':
        return MODELS.build(backbone)
    from mmengine.config import Config
    cfg = Config.fromstring(f"_base_ = '{DET_BASE}'\n", file_format='.py')
    cfg.model.backbone = dict(backbone)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.neck.in_channels = widths
    return MODELS.build(cfg.model)


def det_samples(batch: int, h: int, w: int, train: bool, device):
    """Data samples for a detector: image metas, and three boxes with masks
    per image for a training step."""
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    samples = []
    for _ in range(batch):
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    batch_input_shape=(h, w), scale_factor=(1., 1.))
        sample = DetDataSample(metainfo=meta)
        if train:
            boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.3, 0.2, 0.9, 0.6],
                                  [0.5, 0.5, 0.8, 0.95]]) * torch.tensor(
                                      [w, h, w, h])
            masks = torch.zeros(3, h, w, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            sample.gt_instances = InstanceData(
                bboxes=boxes.to(device), labels=torch.tensor([0, 1, 2],
                                                             device=device),
                masks=BitmapMasks(masks.numpy(), h, w))
        samples.append(sample)
    return samples
