# Copyright (c) mmvit3 authors. All rights reserved.
"""Parameters and FLOPs of MMDetection / MMSegmentation configs, counted as
the paper's ViT³ figures: mmengine's FlopAnalyzer, one multiply-add
= 1 FLOP; a detector in test mode at 800x1280, a segmentor's whole-image
decode forward at 512x2048 without its auxiliary head. See mmvit3/analysis.py.

Example::

    python tools/get_flops.py configs/mask_rcnn_vit3_t_coco.py \
        configs/upernet_vit3_t_ade20k.py
    python tools/get_flops.py configs/upernet_vit3_t_ade20k.py --shape 512 512
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.get_flops import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
