# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/benchmark_data_check.py``: time the dataset check on a synthetic
COCO-format set (:mod:`mmvit3.datasets.bench`) and write the figure, with
the machine's CPU, as a markdown page (docs/benchmark_data_check.md)."""
import argparse
import os.path as osp
import shutil
import tempfile
import time
from typing import Optional, Sequence

from ..benchmark.measurement import machine_info
from ..datasets.bench import time_coco_check, write_synthetic_coco
from .common import tool_main

TOOL = 'tools/benchmark_data_check.py'
PAGE = '''# Dataset check: time on a COCO-size file

Written by `python tools/benchmark_data_check.py` (not by hand): the check that
`tools/train.py` / `tools/test.py` run before building anything, and
`tools/check_dataset.py` runs on its own, timed on a synthetic COCO-format json
of clean annotations (a box, a 4-point polygon and an area each) over JPEG files
of known sizes. It parses the json once, reads every image header (size and
EXIF orientation, no pixels) and checks every annotation. Warm page cache:
on a cold disk, reading the headers of the images takes longer.

| date | CPU | cores | annotations | images | whole check (s) | json parse alone (s) |
| --- | --- | --- | --- | --- | --- | --- |
'''


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Time the dataset check on a synthetic COCO-format set and write '
        'the figure with the CPU as markdown.')
    parser.add_argument('--annotations', type=int, default=100_000,
                        help='annotations in the synthetic json (default: 100000)')
    parser.add_argument('--per-image', type=int, default=8,
                        help='annotations per image (COCO has about 7)')
    parser.add_argument('--work-dir', help='where to write the synthetic set (default: a '
                        'temporary folder, removed afterwards)')
    parser.add_argument('--out', default='docs/benchmark_data_check.md',
                        help='the markdown page to write')
    return parser


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix='mmvit3_data_check_')
    try:
        path = write_synthetic_coco(work, args.annotations, args.per_image)
        result = time_coco_check(path, osp.join(work, 'images'))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    info = machine_info('cpu', None)
    row = (f'| {time.strftime("%Y-%m-%d")} | {info["cpu"]} | {info["cores"]} | '
           f'{result["annotations"]} | {result["images"]} | {result["seconds"]:.1f} | '
           f'{result["parse_seconds"]:.1f} |')
    with open(args.out, 'w') as f:
        f.write(PAGE + row + '\n')
    print(row)
    print(f'written to {args.out}')
    return 0
