# Copyright (c) mmvit3 authors. All rights reserved.
"""The benchmark behind tools/benchmark.py and tools/gpu_benchmark.py.

tools/benchmark.py (:func:`run`, its arguments parsed by
:mod:`mmvit3.cli.benchmark`): speed and
peak memory of ViT3 backbones against Swin-T, ResNet-50, a global-attention
ViT-S and DeiT, the backbone alone or the whole Mask R-CNN, each measurement
in a process of its own; a table, goal ratios and a plot of the results.
tools/gpu_benchmark.py (:func:`run_gpu`): the fused and plain ViT3-T on a GPU
machine without mmdet.

The modules, in the order a run uses them: :mod:`.models` (what is timed),
:mod:`.run` (plan, run), :mod:`.measurement` (one measurement in
its own process), :mod:`.parts` (``--breakdown``), :mod:`.results` (rows
found and merged), :mod:`.report` and :mod:`.figure` (the files written),
:mod:`.gpu`. torch, mmdet and matplotlib are imported where they are used.
"""
from .figure import plot
from .gpu import run_gpu
from .measurement import child_main, machine_info, measure, multi_sizes, run_job
from .models import (BACKBONES, BIG_SIZE, DEFAULT_MODELS, DEFAULT_SIZES,
                     DET_BASE, LABELS, PAPER_SIZES, REF_SIZE, SINGLE_SCALE,
                     build, deit, det_samples, global_vit)
from .parts import (CONV_OPS, MATMUL_OPS, OP_CLASSES, PART_GROUPS,
                    backbone_parts, op_split, profile_ops, time_parts)
from .report import (breakdown_table, goals, markdown, ops_table, variants_table,
                     plain_comparison, write_reports)
from .results import aggregate, find, read_results, variant
from .run import parse_size, plan, run

__all__ = [
    'BACKBONES', 'SINGLE_SCALE', 'LABELS', 'DET_BASE', 'DEFAULT_MODELS',
    'DEFAULT_SIZES', 'PAPER_SIZES', 'REF_SIZE', 'BIG_SIZE', 'global_vit', 'deit',
    'build', 'det_samples', 'PART_GROUPS', 'backbone_parts', 'time_parts',
    'MATMUL_OPS', 'CONV_OPS', 'OP_CLASSES', 'op_split', 'profile_ops',
    'measure', 'child_main', 'run_job', 'machine_info', 'parse_size', 'plan',
    'run', 'aggregate', 'read_results', 'find', 'goals',
    'plain_comparison', 'markdown', 'breakdown_table', 'ops_table', 'plot',
    'write_reports', 'run_gpu', 'multi_sizes', 'variants_table', 'variant'
]
