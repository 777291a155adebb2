# Copyright (c) mmvit3 authors. All rights reserved.
"""Running a config's Runner the way ``tools/train.py`` and
``tools/test.py`` do (:func:`run_runner`): the data checked before anything
is built, the CPU tuned, mmvit3's run hooks added, the checkpoint policy of
the run applied for this run only, and a run that fails to allocate memory
explained."""
import argparse
import datetime
import importlib
import os
import re
import sys
from typing import Callable, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..config import config_flag, config_scope, explain_unknown_types
from ..datasets import check_annotations, check_data, largest_images
from ..engine import (CHECKED_LOADING_HOOK, RUN_HOOKS, CheckedImageLoadingHook, DataCheckHook,
                      check_new_run, hold_work_dir)
from ..errors import EXIT_FAILURE, EXIT_OK, DatasetNotFoundError, MMViT3Error
from ..safe_load import (TOOLS_HINT, allow_nonfinite_weights, set_opt_in_hint,
                         trust_checkpoints)
from ..tuning import ENV_VAR as MALLOC_ENV_VAR
from ..tuning import apply_overrides, choices, keep_freed_memory
from .common import check_amp, check_weight_decay, wants_trust
from .paths import commands_from_here


def _init_cpu_process_group(cfg: Config) -> None:
    """mmengine's ``init_dist`` sets a CUDA device first, which fails
    without CUDA: start the process group (torchrun's environment, gloo)
    here; the Runner then finds it started."""
    import torch.distributed as dist
    if dist.is_initialized():
        return
    kwargs = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = kwargs.pop('backend', 'gloo')
    kwargs.pop('init_backend', None)
    if kwargs.get('timeout') is not None:  # seconds, as mmengine takes it
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    dist.init_process_group(backend=backend, **kwargs)


def build_runner(cfg: Config) -> Runner:
    """The config's Runner (``runner_type`` from the config's library when it
    names one, else mmengine's :class:`Runner`)."""
    if cfg.get('launcher', 'none') == 'pytorch' and \
            not torch.cuda.is_available():
        _init_cpu_process_group(cfg)
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    scope = config_scope(cfg)
    runners = importlib.import_module(f'{scope}.registry').RUNNERS
    return runners.build(cfg)


def add_run_hooks(cfg: Config) -> None:
    """Give the run mmvit3's run hooks (:data:`mmvit3.engine.RUN_HOOKS`: the
    config's checkpoint opt-ins, resume from the newest readable checkpoint,
    the fit check, one run per work dir, a stop on non-finite losses) unless
    the config names them already (configs/_base_/mmvit3_runtime.py), and
    save checkpoints with :class:`~mmvit3.engine.SafeCheckpointHook`."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    named = {h.get('type') for h in hooks if hasattr(h, 'get')}
    hooks += [dict(type=name) for name in RUN_HOOKS if name not in named]
    cfg.custom_hooks = hooks
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if checkpoint is not None and checkpoint.get('type') == 'CheckpointHook':
        checkpoint['type'] = 'SafeCheckpointHook'


def names_hook(cfg: Config, name: str) -> bool:
    """Whether ``cfg.custom_hooks`` holds a hook of type ``name``."""
    for hook in cfg.get('custom_hooks') or []:
        kind = hook.get('type') if hasattr(hook, 'get') else type(hook)
        if kind == name or getattr(kind, '__name__', None) == name:
            return True
    return False


def out_of_memory_message(cfg: Config, splits: Sequence[str],
                          err: BaseException) -> str:
    """What to say when a run fails to allocate memory: the error, the
    largest images of the run (a single huge image is the usual cause) and
    what each task holds per image."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    lines = [f'Out of memory: {first}']
    big = largest_images(cfg, splits)
    if big:
        w, h, path = big[0]
        lines.append('The largest images of this run: ' + ', '.join(
            f'{p} ({bw}x{bh}, {bw * bh / 1e6:.0f} MP)' for bw, bh, p in big) + '.')
        if w * h > 16e6:
            seg = ''
            if cfg.get('default_scope') == 'mmseg':
                classes = (cfg.get('model', {}).get('decode_head') or {}).get(
                    'num_classes') or 150
                seg = (f' segmentation evaluation scales the class scores back '
                       f'to each image\'s original size ({classes} classes x '
                       f'{w}x{h} floats = {classes * w * h * 4 / 2**30:.0f} GiB '
                       f'for {path}), and')
            lines.append(
                f'Images this large need a lot of memory whatever the '
                f'pipeline resizes them to:{seg} decoding and the transforms '
                f'hold full-size copies. Downscale such images (e.g. to at '
                f'most 4096 px a side) or leave them out of the dataset.')
    lines.append('Smaller batches (train_dataloader.batch_size) or fewer '
                 'dataloader workers also lower the memory needed.')
    return '\n'.join(lines)


def check_run_paths(cfg: Config, splits: Sequence[str]) -> None:
    """The data of ``splits`` on disk (:func:`~mmvit3.datasets.check_data`);
    a missing path's message gets the one override for data elsewhere, and
    commands that work from here."""
    try:
        check_data(cfg, splits)
    except DatasetNotFoundError as err:
        message = str(err)
        if isinstance(cfg.get('data_root'), str):
            message += ('\n\nData elsewhere: one override points every '
                        'dataloader and evaluator at it: --cfg-options '
                        'data_root=PATH/')
        raise DatasetNotFoundError(commands_from_here(message), err.missing) from None


def _check_run_data(cfg: Config, splits: Sequence[str]) -> None:
    """The data of ``splits`` on disk and usable."""
    check_run_paths(cfg, splits)
    check_annotations(cfg, splits)


def _tune_cpu() -> None:
    """The tuning choices ``MMVIT3_TUNING`` forces; on a machine without
    CUDA, glibc's malloc keeps freed memory for the next step
    (:func:`mmvit3.tuning.keep_freed_memory`) and the log names the choices."""
    apply_overrides()
    if torch.cuda.is_available():
        return
    if keep_freed_memory():
        print_log(f'CPU run: malloc keeps freed memory for the next step '
                  f'(faster; {MALLOC_ENV_VAR}=default turns it off)', logger='current')
    print_log('CPU run: ' + '; '.join(choices().values()), logger='current')


def run_runner(cfg: Config,
               args: argparse.Namespace,
               mode: str,
               data_splits: Sequence[str],
               prepare: Optional[Callable[[Runner], None]] = None) -> int:
    """Build the Runner and run ``mode`` (``'train'`` or ``'test'``).

    Before building: the data of ``data_splits`` is checked
    (:func:`mmvit3.datasets.check_data`, :func:`~mmvit3.datasets.check_annotations`);
    without CUDA malloc keeps freed memory; mmvit3's run hooks are added
    (:func:`add_run_hooks`); training refuses mixed precision without a GPU
    and takes the work dir's lock. The Runner is built and run with the
    checkpoint policy of the run (``--trust-checkpoint`` /
    ``trust_checkpoint``, ``allow_nonfinite_weights``) for this run only,
    misspelt ``type`` names explained, and checked image loading
    (:class:`~mmvit3.engine.CheckedImageLoadingHook`) unless the config
    names it; ``prepare(runner)`` runs before ``mode``.

    Returns:
        int: 0, or 1 when the run failed to allocate memory (the message
        names the largest images). mmvit3's errors propagate (the tools turn
        them into a message and their exit status).
    """
    _check_run_data(cfg, data_splits)
    _tune_cpu()
    if config_scope(cfg) == 'mmdet':
        # fewer repeated torch.compile recompilations, as mmdet's tools do
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    add_run_hooks(cfg)
    try:
        with set_opt_in_hint(TOOLS_HINT):
            if mode == 'train':
                check_amp(cfg)
                check_weight_decay(cfg)
                if int(os.environ.get('RANK', 0)) == 0:  # before the Runner writes there
                    check_new_run(cfg.work_dir, bool(cfg.get('resume')),
                                  config_flag(cfg, 'overwrite_checkpoints'))
                    hold_work_dir(cfg.work_dir)
            with explain_unknown_types(cfg), \
                    trust_checkpoints(wants_trust(args, cfg)), \
                    allow_nonfinite_weights(config_flag(cfg, 'allow_nonfinite_weights')):
                runner = build_runner(cfg)
                if not names_hook(cfg, CHECKED_LOADING_HOOK):
                    # checked loading without changing the config the Runner saves
                    runner.register_hook(CheckedImageLoadingHook())
                for hook in runner.hooks:  # the data was checked above
                    if isinstance(hook, DataCheckHook):
                        hook.done = True
                if prepare is not None:
                    prepare(runner)
                getattr(runner, mode)()
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, MMViT3Error) or isinstance(err, RuntimeError) and \
                not re.search(r"can't allocate memory|out of memory", str(err)):
            raise
        print(out_of_memory_message(cfg, data_splits, err), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
