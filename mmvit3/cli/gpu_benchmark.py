# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/gpu_benchmark.py``: on a GPU machine with torch (+ timm), mmengine
and mmcv-lite only, the fused and plain ViT3-T checked against each other,
then timed against Swin-T and DeiT-T (:mod:`mmvit3.benchmark.gpu`)."""
import argparse
import os

from ..benchmark.gpu import DTYPES, run_gpu


def parse_args(argv=None):
    """The options of ``tools/gpu_benchmark.py``."""
    parser = argparse.ArgumentParser(
        description='Fused == plain on the GPU, then ViT3-T against Swin-T and DeiT-T: '
        'time and peak memory')
    parser.add_argument('--out', default=os.environ.get('OUT', 'work_dirs/gpu_benchmark'))
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--sizes', nargs='+', default=['800x1344', '1600x2688'])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--dtypes', nargs='+', default=['bf16', 'fp32'], choices=list(DTYPES))
    parser.add_argument('--runs', type=int, default=5)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return run_gpu(parse_args(argv))
