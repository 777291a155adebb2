# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/make_demo_data.py``: write the small, deterministic synthetic
dataset of the demo configs (:mod:`mmvit3.datasets.demo`)."""
import argparse
from typing import Optional, Sequence

from ..datasets.demo import CLASSES, make_demo_data
from .common import tool_main

TOOL = 'tools/make_demo_data.py'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Write the synthetic shapes dataset of the mmvit3 demo '
        'configs (COCO instances + ADE20K-style semantic labels).')
    parser.add_argument('--out', default='data/demo', help='output folder')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--num-train', type=int, default=400,
                        help='training images')
    parser.add_argument('--num-val', type=int, default=60,
                        help='validation images')
    parser.add_argument('--size', type=int, default=256,
                        help='image side in pixels (square images)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace annotations/, images/ and ade/ in --out even '
                        'if they hold files this tool did not write (refused '
                        'otherwise; a rerun over its own output needs no flag)')
    return parser


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    counts = make_demo_data(args.out, args.seed, args.num_train, args.num_val,
                            args.size, args.overwrite)
    print(f'Wrote {args.num_train} train / {args.num_val} val images '
          f'({counts["train"]} / {counts["val"]} objects, classes '
          f'{", ".join(CLASSES)}) to {args.out}/ (COCO: annotations/, images/; '
          f'ADE20K layout: ade/)')
    return 0
