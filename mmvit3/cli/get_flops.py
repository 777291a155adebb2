# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/get_flops.py``: parameters and FLOPs of MMDetection /
MMSegmentation configs, counted as the paper's ViT³ figures
(:mod:`mmvit3.analysis`)."""
import argparse
import os.path as osp
import time
from typing import Optional, Sequence

from mmengine.config import DictAction
from mmengine.logging import print_log

from ..analysis import analyze_config, format_count
from .common import tool_main

TOOL = 'tools/get_flops.py'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Parameters and FLOPs of detector / segmentor configs')
    parser.add_argument('configs', nargs='+', metavar='CONFIG',
                        help='config file(s)')
    parser.add_argument(
        '--shape', type=int, nargs='+', metavar=('H', 'W'),
        help='input height and width (one value: square); defaults: '
        '800 1280 for detectors, 512 2048 for segmentors')
    parser.add_argument(
        '--show-modules', type=int, default=0, metavar='DEPTH',
        help='also print the FLOPs of the modules down to this depth')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of every config, key=value pairs '
        '(as in tools/train.py)')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) == 1:
            args.shape = args.shape * 2
        if len(args.shape) != 2:
            parser.error('--shape takes H W (or one value for a square)')
    return args


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rows = []
    for i, config in enumerate(args.configs, 1):
        print_log(f'[{i}/{len(args.configs)}] {config} ...', logger='current')
        start = time.time()
        res = analyze_config(config, args.shape, args.cfg_options)
        rows.append(res)
        print_log(f'[{i}/{len(args.configs)}] {config}: params '
                  f'{res.params / 1e6:.2f}M, FLOPs {res.flops / 1e9:.1f}G'
                  f' ({time.time() - start:.0f} s)', logger='current')
        if args.show_modules:
            for name, flops in res.by_module.items():
                depth = name.count('.') + 1 if name else 0
                if depth <= args.show_modules and flops:
                    print(f'    {name or "(total)":<50} {format_count(flops)}')

    header = ('config', 'input (h, w)', 'params', 'FLOPs')
    table = [(osp.basename(r.name), f'{r.shape[0]}x{r.shape[1]}',
              f'{r.params / 1e6:.2f}M', f'{r.flops / 1e9:.1f}G') for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    line = '-+-'.join('-' * w for w in widths)
    fmt = ' | '.join(f'{{:{"<" if j == 0 else ">"}{w}}}'
                     for j, w in enumerate(widths))
    print(line)
    print(fmt.format(*header))
    print(line)
    for row in table:
        print(fmt.format(*row))
    print(line)
    print('FLOPs: multiply-adds of one forward pass (mmengine FlopAnalyzer, '
          'default op handles, as the paper\'s figures).')
    return 0
