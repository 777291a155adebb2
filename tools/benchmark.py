#!/usr/bin/env python
# Copyright (c) mmvit3 authors. All rights reserved.
"""Speed and peak memory of ViT3 backbones against MMDetection's Swin-T,
ResNet-50 and a global-attention ViT-S, over input sizes, for the backbone
alone and for the whole Mask R-CNN detector, in inference and in a training
step (forward + backward), on CPU or CUDA.

Every measurement runs in a process of its own, so that peak memory is that
model's alone: peak RSS on CPU (``VmHWM``), ``torch.cuda.max_memory_allocated``
on CUDA. The results are written as they come (``results.jsonl``), then as a
markdown table (``benchmark.md``, with the machine it ran on) and a log-log
plot of time and memory against pixels with linear and quadratic slopes
(``benchmark.png``). A ``goals`` section compares ViT3-T with Swin-T and with
the plain implementation, and the two detection sizes with each other;
another compares plain ViT3-T/S with DeiT-T/S (global attention, through
SDPA and written out) beside the papers' high-resolution claims.
With ``--breakdown`` each part of a backbone (stem, each stage's blocks,
each down-sampling, the output norms) is also timed on its own, fed what it
gets in the model, and the report says where the time goes; on CPU a few more
steps run under ``torch.profiler`` and their operators' time is split into
matrix products (with their multiply-adds), convolutions and the rest.

Examples::

    python tools/benchmark.py                                # default grid
    python tools/benchmark.py --models vit3-t swin-t --sizes 800x1344 \\
        --modes infer train --levels backbone
    python tools/benchmark.py --device cuda --amp            # bf16 autocast
    python tools/benchmark.py --models vit3-t swin-t --sizes 800x1344 \\
        --breakdown                                          # per part
    python tools/benchmark.py --replot work_dirs/benchmark   # redraw only
    python tools/benchmark.py --models plain-vit3-t deit-t deit-t-naive \\
        plain-vit3-s deit-s deit-s-naive --sizes 224 512 768 1024 1248 1280
                                          # plain ViT3 against DeiT (papers' claim)

Sizes are ``H``x``W`` (or one number for a square); batch 1 unless
``--batch``. A measurement that runs out of memory or time is reported as
such, not dropped.
"""
import os.path as osp
import sys

# run as a script: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
