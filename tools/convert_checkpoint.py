#!/usr/bin/env python
# Copyright (c) mmvit3 authors. All rights reserved.
"""Turn a released ViT³ checkpoint into a plain backbone weights file.

The authors' ImageNet files pickle a yacs config object beside the weights,
so safe loading (``torch.load(weights_only=True)``) refuses them. Convert a
file you trust once; the output holds tensors only and loads safely from then
on, e.g. as ``init_cfg=dict(type='Pretrained', checkpoint=OUT)``:

    python tools/convert_checkpoint.py h_vittt_tiny.pth pretrained/h_vit3_tiny.pth --trusted
    python tools/convert_checkpoint.py vittt_tiny.pth pretrained/vit3_plain_tiny.pth --trusted

It picks the weights ('model' by default; --key state_dict_ema for the EMA
weights), drops what dense prediction does not use (classifier head, its
BatchNorm1d, RoPE tables), checks that the rest fits a ViT3 backbone, or a
PlainViT3 one for the plain models' files (the arch is read from the file, or
checked against --arch) and reports all of it.
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.convert_checkpoint import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
