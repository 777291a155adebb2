#!/usr/bin/env python
# Copyright (c) mmvit3 authors. All rights reserved.
"""One script for a GPU machine with only torch (+ timm) and mmengine /
mmcv-lite: checks the fused and plain implementations agree on CUDA (fp32,
and finite under bf16 / fp16 autocast), then times ViT3-T (each
implementation) against timm's Swin-T and DeiT-T (when timm is importable):
batch 2, 800x1344 and 1600x2688, fp32 and bf16 autocast, inference and a
training step (forward + backward), with peak memory. Writes
``OUT/gpu_benchmark.json`` and ``OUT/gpu_benchmark.md``.

    python tools/gpu_benchmark.py --out $OUT            # the full grid, < 10 min on an H200
    python tools/gpu_benchmark.py --device cpu --sizes 64x96 --runs 1   # a smoke run
"""
import os.path as osp
import sys

# run as a script: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmvit3.cli.gpu_benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
