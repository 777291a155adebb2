# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/test.py``: test (and evaluate) a ViT3 detector (MMDetection) or
segmentor (MMSegmentation); the config's ``default_scope`` decides which.

``--out results.pkl`` dumps the predictions (detection: masks RLE-encoded,
as mmdet's DumpDetResults). For segmentation configs, ``--out DIR`` (not
ending in .pkl) writes the predicted label maps as PNGs into DIR, as mmseg's
tools/test.py does.
"""
import argparse
import os.path as osp
import warnings
from copy import deepcopy
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from ..config import config_scope
from ..datasets import refuse_dataset_outputs
from ..errors import CheckpointNotFoundError, ConfigError, OutputError
from .common import add_common_args, apply_common_args, output_problem, tool_main
from .runner import run_runner

TOOL = 'tools/test.py'
PKL = ('.pkl', '.pickle')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Test and evaluate a ViT3 detector or segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file (.pkl) for offline '
        'evaluation; segmentation configs also take a directory, which '
        'receives the predicted label maps as PNGs')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation')
    parser.add_argument(
        '--amp', action='store_true',
        help="mixed precision (mmengine's test_cfg.fp16): on a GPU the whole "
        'step under autocast; on CPU bfloat16 autocast of the backbone and neck, '
        'heads in float32 (mmvit3\'s AmpHook)')
    parser.add_argument(
        '--overwrite', action='store_true',
        help='write --out / --show-dir / --work-dir even where they are, hold '
        "or lie inside the config's dataset images or labels (refused "
        'otherwise); never over the checkpoint or the config')
    add_common_args(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def trigger_visualization_hook(cfg: Config, args, scope: str) -> Config:
    """Turn on drawing in the config's visualization hook (as the mmdet /
    mmseg test tools do)."""
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ConfigError(
            '--show / --show-dir need a visualization hook in default_hooks, '
            "e.g. visualization=dict(type='DetVisualizationHook') (mmdet) or "
            "dict(type='SegVisualizationHook') (mmseg)")
    hook = hooks['visualization']
    hook['draw'] = True
    if scope == 'mmseg':
        hook['interval'] = 1  # every test image, as mmdet's hook draws
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if scope == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        else:
            cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def _det_tta(cfg: Config) -> Config:
    # as mmdet's tools/test.py
    if cfg.model.get('roi_head', {}).get('mask_head') is not None:
        raise ConfigError(
            '--tta: MMDetection 3.3 test-time augmentation (DetTTAModel) '
            'merges boxes only; it does not support instance segmentation '
            'models such as Mask R-CNN.')
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, '
                      'we will set it as default.')
        cfg.tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, '
                      'we will set it as default.')
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:
            test_data_cfg = test_data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        flip_tta = dict(
            type='TestTimeAug',
            transforms=[
                [
                    dict(type='RandomFlip', prob=1.),
                    dict(type='RandomFlip', prob=0.)
                ],
                [
                    dict(
                        type='PackDetInputs',
                        meta_keys=('img_id', 'img_path', 'ori_shape',
                                   'img_shape', 'scale_factor', 'flip',
                                   'flip_direction'))
                ],
            ])
        cfg.tta_pipeline[-1] = flip_tta
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg


def _seg_tta(cfg: Config) -> Config:
    # as mmseg's tools/test.py
    if 'tta_pipeline' not in cfg:
        raise ConfigError('--tta needs `tta_pipeline` in the config (the '
                         'mmseg dataset bases define one)')
    tta_model = cfg.get('tta_model') or dict(type='SegTTAModel')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.model = ConfigDict(**tta_model, module=cfg.model)
    return cfg


def build_cfg(args) -> Config:
    cfg = apply_common_args(args, TOOL)
    scope = config_scope(cfg)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args, scope)

    if args.tta:
        cfg = _det_tta(cfg) if scope == 'mmdet' else _seg_tta(cfg)

    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg') or ConfigDict(type='TestLoop')
        cfg.test_cfg.fp16 = True

    if args.out is not None and not args.out.endswith(PKL):
        if scope == 'mmdet':
            raise ConfigError('--out must name a .pkl / .pickle file, got '
                             f'{args.out!r}')
        # mmseg: the evaluator writes the predicted label maps as PNGs
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    return cfg


def output_paths(cfg: Config, args, scope: str) -> List[Tuple[str, str]]:
    """``[(option, path)]`` of what the run writes: the work dir, ``--out``
    and the folder of ``--show-dir`` (mmdet's hook puts a relative one under
    the work dir)."""
    paths = [('--work-dir', cfg.work_dir)]
    if args.out is not None:
        paths.append(('--out', args.out))
    if args.show_dir:
        paths.append(('--show-dir', osp.join(cfg.work_dir, args.show_dir)
                      if scope == 'mmdet' else args.show_dir))
    return paths


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = build_cfg(args)
    scope = config_scope(cfg)

    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise CheckpointNotFoundError(f'Checkpoint not found: {args.checkpoint}')
    if args.out is not None:
        problem = output_problem(args.out, not args.out.endswith(PKL),
                                 [args.checkpoint, args.config])
        if problem:
            raise OutputError(f'--out: {problem}; nothing was evaluated.')
    if not args.overwrite:
        refuse_dataset_outputs(cfg, output_paths(cfg, args, scope))

    def add_dump_metric(runner):
        # dump predictions through a dummy metric, as mmdet's tools/test.py
        if args.out is not None and args.out.endswith(PKL):
            if scope == 'mmdet':
                from mmdet.evaluation import DumpDetResults as Dump
            else:
                from mmengine.evaluator import DumpResults as Dump
            runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))

    return run_runner(cfg, args, 'test', ['test'], prepare=add_dump_metric)

