# Copyright (c) mmvit3 authors. All rights reserved.
"""Train a detector (MMDetection) or a segmentor (MMSegmentation) with a ViT3
backbone; the config's ``default_scope`` decides which.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
        [--auto-scale-lr] [--tensorboard] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}] [--trust-checkpoint]

Several processes (GPUs, or CPU processes with gloo when there is no CUDA):
``tools/dist_train.sh CONFIG NPROC [args]``; Slurm:
``tools/slurm_train.sh PARTITION JOB CONFIG [args]``.
"""
import argparse
import logging
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmvit3  # noqa: E402,F401  (registers ViT3 in mmdet / mmseg)
from mmengine.config import Config  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from mmvit3.utils import enable_tensorboard  # noqa: E402
from mmvit3.utils.tools import (  # noqa: E402
    add_common_args, apply_common_args, run_runner)

TOOL = 'tools/train.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a ViT3 detector (mmdet) or segmentor (mmseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR (needs `auto_scale_lr` with '
        '`base_batch_size` in the config)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--tensorboard',
        action='store_true',
        help='also log losses, learning rates and metrics for TensorBoard '
        '(in WORK_DIR/TIMESTAMP/vis_data; needs `pip install tensorboard`)')
    add_common_args(parser)
    return parser.parse_args(argv)


def build_cfg(args) -> Config:
    cfg = apply_common_args(args, TOOL)

    # enable automatic-mixed-precision training
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            if optim_wrapper != 'OptimWrapper':
                raise SystemExit(
                    '--amp works with `optim_wrapper.type=OptimWrapper`, '
                    f'the config has {optim_wrapper!r}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    # enable automatically scaling LR
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise SystemExit(
                '--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                'base_batch_size=N)` in the config (N: the total batch size '
                'its lr was set for).')

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.tensorboard:
        enable_tensorboard(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)

    splits = ['train']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        splits.append('val')
    return run_runner(cfg, args, 'train', splits)


if __name__ == '__main__':
    sys.exit(main())
