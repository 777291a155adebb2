# Copyright (c) mmvit3 authors. All rights reserved.
"""The ViT³ backbones (torch, mmengine and mmcv only; never mmdet / mmseg):
H-ViT³ (:class:`ViT3`), plain ViT³ (:class:`PlainViT3`) and the simple
feature pyramid for plain backbones (:class:`SimpleFPN`)."""
from .base import load_pretrained
from .blocks import ViT3Block
from .simple_fpn import LayerNorm2d, SimpleFPN
from .ttt import TTTMixer, inner_train_dwconv, inner_train_swiglu
from .vit3 import ViT3
from .vit3_plain import PlainViT3
from .weights import (LAYOUTS, PLAIN_LAYOUT, VIT3_LAYOUT, BackboneLayout, FilterReport,
                      checkpoint_filter_fn, identify, select_state_dict)
from . import fused  # noqa: E402,F401,I001  (binds the fused kernels to the modules above)

#: The backbone class of each weights layout.
BACKBONES = {cls.weights_layout.name: cls for cls in (ViT3, PlainViT3)}

__all__ = [
    'ViT3', 'PlainViT3', 'SimpleFPN', 'LayerNorm2d', 'ViT3Block', 'TTTMixer',
    'inner_train_swiglu', 'inner_train_dwconv', 'checkpoint_filter_fn', 'load_pretrained',
    'identify', 'select_state_dict', 'FilterReport', 'BackboneLayout', 'LAYOUTS',
    'VIT3_LAYOUT', 'PLAIN_LAYOUT', 'BACKBONES'
]
