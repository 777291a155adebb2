# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/benchmark.py``: speed and peak memory of ViT3 backbones against
Swin-T, ResNet-50, a global-attention ViT-S and DeiT (:mod:`mmvit3.benchmark`)."""
import argparse
import os

from ..benchmark import BACKBONES, DEFAULT_MODELS, DEFAULT_SIZES, parse_size, run
from ..errors import ConfigError
from ..tuning import parse_overrides


def parse_args(argv=None) -> argparse.Namespace:
    """tools/benchmark.py's arguments (``argv``: sys.argv's by default)."""
    parser = argparse.ArgumentParser(
        description='Speed and peak memory of ViT3 against Swin-T, ResNet-50 '
        'and a global-attention ViT-S',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS,
                        choices=list(BACKBONES))
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[parse_size(s) for s in DEFAULT_SIZES],
                        help='input sizes, H or HxW')
    parser.add_argument('--modes', nargs='+', default=['infer', 'train'],
                        choices=['infer', 'train'])
    parser.add_argument('--levels', nargs='+', default=['backbone'],
                        choices=['backbone', 'detector'],
                        help='the backbone alone, or the whole Mask R-CNN')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--precisions', nargs='+', default=['fp32'], choices=['fp32', 'bf16'],
                        help='bf16: autocast (ViT3 keeps its inner step in float32; a '
                        'detector autocasts its backbone and neck, its heads stay float32)')
    parser.add_argument('--amp', action='store_true', help='the same as --precisions bf16')
    parser.add_argument('--executions', nargs='+', default=['eager'],
                        choices=['eager', 'compiled'],
                        help='compiled: torch.compile of the backbone (a detector: its '
                        'backbone and neck), one graph per input size; the first step at '
                        'each size (compilation) is reported apart')
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile's backend for --executions compiled")
    parser.add_argument('--scales', nargs='+', default=['fixed'], choices=['fixed', 'multi'],
                        help='multi: the steps cycle through the size, 0.9x and 1.1x of it '
                        '(padded to 32), as a multi-scale recipe changes sizes')
    parser.add_argument('--tunings', nargs='+', default=['auto'], metavar='TUNING',
                        help='auto: every CPU tuning choice follows the CPU (as in the '
                        'tools); or choices forced as MMVIT3_TUNING takes them, e.g. '
                        'linear=blas linear=onednn, to measure a choice both ways')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: torch\'s choice)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=3,
                        help='timed runs (fewer once --max-time is spent)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='run the whole plan this many times, one '
                        'measurement after the other, and report the median '
                        'time over the rounds: on a shared machine a slow '
                        'spell then hits every model alike')
    parser.add_argument('--max-time', type=float, default=60,
                        help='seconds of timed runs per measurement')
    parser.add_argument('--timeout', type=float, default=900,
                        help='seconds before a measurement is given up')
    parser.add_argument('--mem-limit', type=float, default=None,
                        help='GiB of address space per measurement on CPU; '
                        'default 90%% of the machine\'s memory')
    parser.add_argument('--breakdown', action='store_true',
                        help='also time each part of the backbone on its own '
                        '(stem, each stage\'s blocks, each down-sampling, the '
                        'output norms), fed what it gets in the model, and '
                        'on CPU split the operator time of a few profiled '
                        'steps into matrix products, convolutions and the rest; '
                        'backbone level only')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--replot', metavar='DIR',
                        help='only redraw the table and plot from DIR\'s '
                        'results.jsonl')
    args = parser.parse_args(argv)
    if args.amp:
        args.precisions = ['bf16']
    for tuning in set(args.tunings) - {'auto'}:
        try:
            parse_overrides(tuning)
        except ConfigError as err:
            parser.error(f'--tunings {tuning}: {err}')
    if args.rounds < 1:
        parser.error(f'--rounds must be at least 1, not {args.rounds}')
    if args.mem_limit is None:
        args.mem_limit = 0.9 * os.sysconf('SC_PAGE_SIZE') * \
            os.sysconf('SC_PHYS_PAGES') / 2**30
    return args


def main(argv=None) -> int:
    return run(parse_args(argv))
