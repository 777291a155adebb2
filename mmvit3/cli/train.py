# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/train.py``: train a detector (MMDetection) or a segmentor
(MMSegmentation) with a ViT3 backbone; the config's ``default_scope`` decides
which."""
import argparse
import importlib.util
import logging
from typing import Optional, Sequence

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log

from ..datasets import refuse_dataset_outputs
from ..errors import ConfigError
from .common import add_common_args, apply_common_args, tool_main
from .runner import run_runner

TOOL = 'tools/train.py'
AMP_WRAPPERS = ('AmpOptimWrapper', 'BF16AmpOptimWrapper')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train a ViT3 detector (mmdet) or segmentor (mmseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (mmengine\'s '
        'AmpOptimWrapper on a GPU; without one, BF16AmpOptimWrapper: bfloat16 '
        'autocast of the backbone and neck)')
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
        '--overwrite',
        action='store_true',
        help='let this run replace the checkpoints an earlier run left in the work dir '
        '(refused otherwise; same as `overwrite_checkpoints = True` in the config), and '
        "write into a work dir that is, holds or lies inside the config's dataset images "
        'or labels (refused otherwise)')
    parser.add_argument(
        '--tensorboard',
        action='store_true',
        help='also log losses, learning rates and metrics for TensorBoard '
        '(in WORK_DIR/TIMESTAMP/vis_data; needs `pip install tensorboard`)')
    add_common_args(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def enable_tensorboard(cfg: Config) -> Config:
    """Add mmengine's ``TensorboardVisBackend`` to ``cfg.visualizer``: losses,
    learning rates and metrics then also go to TensorBoard event files in
    ``WORK_DIR/TIMESTAMP/vis_data/``.

    Raises:
        ConfigError: The tensorboard package is missing (mmengine would only
            find out at the first log line, after the first iterations), or
            the config has no visualizer.
    """
    if importlib.util.find_spec('tensorboard') is None:
        raise ConfigError("TensorBoard logging needs the tensorboard package: "
                          "pip install tensorboard (or pip install -e '.[tensorboard]' "
                          "in the repository)")
    if cfg.get('visualizer') is None:
        raise ConfigError('TensorBoard logging needs a `visualizer` in the '
                          'config (the mmdet / mmseg default_runtime bases set one)')
    backends = cfg.visualizer.setdefault('vis_backends', [])
    if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))
    return cfg


def build_cfg(args: argparse.Namespace) -> Config:
    """The config of a training run: the common options, then ``--amp``,
    ``--auto-scale-lr``, ``--resume`` and ``--tensorboard``, as mmdet's
    tools/train.py applies them."""
    cfg = apply_common_args(args, TOOL)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper in AMP_WRAPPERS:
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            if optim_wrapper != 'OptimWrapper':
                raise ConfigError(
                    '--amp works with `optim_wrapper.type=OptimWrapper`, '
                    f'the config has {optim_wrapper!r}')
            if get_device() == 'cpu':  # bfloat16 autocast of backbone and neck
                cfg.optim_wrapper.type = 'BF16AmpOptimWrapper'
            else:
                cfg.optim_wrapper.type = 'AmpOptimWrapper'
                cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise ConfigError(
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
    if args.overwrite:
        cfg.overwrite_checkpoints = True
    return cfg


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = build_cfg(args)
    if not args.overwrite:  # checkpoints and logs never land among the images
        refuse_dataset_outputs(cfg, [('--work-dir' if args.work_dir else 'work_dir',
                                      cfg.work_dir)])
    splits = ['train']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        splits.append('val')
    return run_runner(cfg, args, 'train', splits)
