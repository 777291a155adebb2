# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/check_dataset.py``: check a config's data before training or
testing on it (:func:`mmvit3.datasets.check_dataset`) and print a summary
per split: counts, and each kind of problem with its count and first
files / annotation ids."""
import argparse
from typing import Optional, Sequence

from ..datasets import check_dataset
from ..errors import EXIT_OK, EXIT_USER
from .common import add_cfg_options, read_config, tool_main
from .runner import check_run_paths

TOOL = 'tools/check_dataset.py'
SPLITS = ('train', 'val', 'test')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Check the data of a detection or segmentation config: paths, '
        'annotation files entry by entry, every image file against its entry (read '
        'from its header), label maps. Exit status 0: no errors; 2: errors (or '
        'warnings with --strict), or a bad config.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--splits', nargs='+', choices=SPLITS, default=list(SPLITS),
                        help='the splits to check (default: all the config has)')
    parser.add_argument('--strict', action='store_true',
                        help='exit 2 on warnings too (annotations the library drops or '
                        'clips itself)')
    add_cfg_options(parser)
    return parser


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = read_config(args.config, args.cfg_options, TOOL)
    check_run_paths(cfg, args.splits)
    report = check_dataset(cfg, args.splits)
    print(report.summary())
    return EXIT_USER if report.errors or (args.strict and report.warnings) else EXIT_OK
