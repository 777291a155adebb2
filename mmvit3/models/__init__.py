# Copyright (c) mmvit3 authors. All rights reserved.
from .checkpoint import (CheckpointMismatchError, FilterReport,
                         checkpoint_filter_fn, infer_arch, load_pretrained)
from .ttt import TTTMixer, inner_train_dwconv, inner_train_swiglu
from .plain_checkpoint import load_pretrained_plain, plain_checkpoint_filter_fn
from .simple_fpn import SimpleFPN
from .vit3 import ViT3, ViT3Block
from .vit3_plain import PlainViT3, PlainViT3Block

__all__ = [
    'ViT3', 'ViT3Block', 'TTTMixer', 'inner_train_swiglu', 'inner_train_dwconv',
    'checkpoint_filter_fn', 'load_pretrained', 'infer_arch', 'FilterReport',
    'CheckpointMismatchError', 'PlainViT3', 'PlainViT3Block',
    'plain_checkpoint_filter_fn', 'load_pretrained_plain', 'SimpleFPN'
]
