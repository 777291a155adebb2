# Copyright (c) mmvit3 authors. All rights reserved.
"""What ``tools/train.py`` and ``tools/test.py`` share: the config's library
(:func:`config_scope`), the common command-line options
(:func:`add_common_args`, :func:`apply_common_args`), distributed runs on
machines without CUDA (:func:`adapt_to_cpu_distributed`), building the
Runner (:func:`build_runner`) and running it with the checkpoint-safety
policy of the run and clear messages for bad images, misspelt types,
checkpoints that do not fit the backbone and mixed precision without a GPU
(:func:`run_runner`).
"""
import argparse
import copy
import datetime
import importlib
import logging
import os
import os.path as osp
import re
import sys
from typing import Any, Callable, Optional, Sequence, Union

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..datasets import CHECKED_LOADING_HOOK, CheckedImageLoadingHook
from ..engine import (RUN_HOOKS, NonFiniteLossError, WorkDirBusyError,
                      hold_work_dir)
from ..models.checkpoint import CheckpointMismatchError
from ..registration import SCOPES
from ..safe_load import (TOOLS_HINT, CheckpointDownloadError,
                         CheckpointNotFoundError, CorruptCheckpointError,
                         NonFiniteCheckpointError, UnsafeCheckpointError,
                         allow_nonfinite_weights, set_opt_in_hint,
                         trust_checkpoints)
from .config_tree import typed_dicts
from .data_check import (BadAnnotationError, DatasetNotFoundError,
                         check_annotations, check_data, largest_images)
from .errors import AmpUnavailableError, check_amp, explain_unknown_types
from .malloc import ENV_VAR as MALLOC_ENV_VAR
from .malloc import keep_freed_memory
from .paths import commands_from_here, propagate_data_root, resolve_against_repo
from .project_keys import check_project_keys

#: Launchers of ``--launcher`` (mmengine's ``init_dist``).
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')

#: Norm layer types that need CUDA (or another accelerator) in a
#: distributed run, and their single-device equivalent.
_SYNC_NORMS = {'SyncBN': 'BN', 'MMSyncBN': 'BN'}


def load_config(config: Union[str, Config],
                cfg_options: Optional[dict] = None) -> Config:
    """Read a config file (or copy a :class:`Config`) and merge overrides.

    Args:
        config (str | Config): Config file or object.
        cfg_options (dict, optional): ``{dotted.key: value}`` overrides, as
            ``--cfg-options`` gives them. Defaults to None.
    """
    cfg = (copy.deepcopy(config) if isinstance(config, Config) else
           Config.fromfile(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def config_scope(cfg: Config, tool: Optional[str] = None) -> str:
    """``'mmdet'`` or ``'mmseg'``: the library a config belongs to, from its
    ``default_scope``.

    Args:
        cfg (Config): The config.
        tool (str, optional): The tool reading it, for the message (e.g.
            ``'tools/train.py'``). Defaults to None.

    Raises:
        ValueError: ``default_scope`` is missing or another library's.
    """
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        where = f' in {cfg.filename}' if cfg.filename else ''
        raise ValueError(
            f'{tool or "mmvit3"} serves MMDetection and MMSegmentation '
            f'configs: default_scope must be one of {SCOPES}, got '
            f'{scope!r}{where}. Configs inheriting mmdet::/mmseg:: bases (or '
            f'their _base_ default_runtime.py) set it.')
    return scope


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` that names an item without ``=`` instead of
    failing with a traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            if '=' not in item or item.startswith('='):
                parser.error(
                    f'{option_string} {item!r}: each override is KEY=VALUE '
                    f'(e.g. {option_string} train_cfg.max_iters=100 '
                    f'optim_wrapper.optimizer.lr=0.0001); a value with spaces '
                    f'needs quotes, KEY="[a, b]"')
        super().__call__(parser, namespace, values, option_string)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the options both tools take: ``--work-dir``, ``--cfg-options``,
    ``--trust-checkpoint``, ``--launcher`` and ``--local-rank``."""
    parser.add_argument(
        '--work-dir',
        help='the directory for logs, checkpoints and metrics (default: '
        'the config\'s work_dir, else ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='fully unpickle the checkpoints this run loads (can run code '
        'from the file): only for files you trust. Same as '
        '`trust_checkpoint = True` in the config')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def apply_common_args(args: argparse.Namespace, tool: str) -> Config:
    """Read ``args.config`` and apply the options of :func:`add_common_args`:
    overrides, launcher (adapted to the machine by
    :func:`adapt_to_cpu_distributed`) and work_dir (CLI > config > name of
    the config file). ``--cfg-options data_root=PATH`` reaches every
    dataloader and evaluator that used the config's ``data_root``, and
    relative data paths missing here but present in the repository resolve
    against it (:mod:`mmvit3.utils.paths`).

    Raises:
        SystemExit: The config is not an mmdet / mmseg one, has a misspelt
            mmvit3 key (:func:`~mmvit3.utils.project_keys.check_project_keys`),
            or its launcher cannot run on this machine.
    """
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = load_config(args.config)
    file_data_root = cfg.get('data_root')
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
        new_root = args.cfg_options.get('data_root')
        if isinstance(file_data_root, str) and isinstance(new_root, str):
            # the config's data_root was copied into each dataloader and
            # evaluator when it was read: one override reaches them all
            propagate_data_root(cfg, file_data_root, new_root)
    resolve_against_repo(cfg)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    try:
        config_scope(cfg, tool)
        check_project_keys(cfg, args.config)
        adapt_to_cpu_distributed(cfg)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return cfg


def adapt_to_cpu_distributed(cfg: Config,
                             cuda: Optional[bool] = None) -> bool:
    """Make a distributed config (``cfg.launcher`` not ``'none'``) run on a
    machine without CUDA: the gloo backend instead of the bases' nccl,
    BatchNorm instead of SyncBN (which needs GPUs), and a DDP wrapper
    without device ids. Logs what it changed; a no-op with CUDA.

    With plain BN, each process normalises its batches with its own
    statistics; DDP (torch's default, unlike mmengine's) broadcasts rank
    0's running statistics at every forward, so the saved statistics are
    rank 0's.

    Args:
        cfg (Config): The config, changed in place.
        cuda (bool, optional): Whether CUDA is available. Defaults to
            ``torch.cuda.is_available()``.

    Returns:
        bool: Whether the config was changed.

    Raises:
        ValueError: A launcher other than ``'pytorch'`` without CUDA.
    """
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cfg.get('launcher', 'none') == 'none' or cuda:
        return False
    if cfg.launcher != 'pytorch':
        raise ValueError(
            f'--launcher {cfg.launcher} needs GPUs (mmengine sets a CUDA '
            f'device per process); without CUDA, run the processes with '
            f'torchrun: tools/dist_train.sh CONFIG NPROC (--launcher '
            f'pytorch), which trains on CPU with the gloo backend.')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    old = dist_cfg.get('backend', 'nccl')
    dist_cfg['backend'] = 'gloo'
    swapped = _replace_sync_norms(cfg.model)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None  # CPU modules take no device ids
    cfg.model_wrapper_cfg = wrapper
    sync_bn = cfg.pop('sync_bn', None)  # converting BN to SyncBN: off
    if int(os.environ.get('RANK', 0)) != 0:
        return True  # said once, by the first process
    print_log(
        f'No CUDA: distributed run on CPU with the gloo backend (the config '
        f'asked for {old!r})' +
        (f'; {swapped} SyncBN layer config(s) use BN instead (per-process '
         f'statistics, running statistics broadcast from rank 0)'
         if swapped else '') +
        (f'; sync_bn={sync_bn!r} ignored' if sync_bn else '') + '.',
        logger='current', level=logging.WARNING)
    return True


def _replace_sync_norms(node: Any) -> int:
    """Turn every ``dict(type='SyncBN', ...)`` under ``node`` into BN;
    returns how many."""
    count = 0
    for _, cfg in typed_dicts(node):
        if cfg['type'] in _SYNC_NORMS:
            cfg['type'] = _SYNC_NORMS[cfg['type']]
            count += 1
    return count


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


def output_problem(path: str, directory: bool = False,
                   inputs: Sequence[str] = ()) -> Optional[str]:
    """Why ``path`` (a file, or with ``directory`` a folder to be created
    if needed) cannot be written, or None; checked before a run so that a
    long evaluation does not end in a failed write. An output that would
    replace one of ``inputs`` is refused too."""
    real = osp.realpath(path)
    for item in inputs:
        if item and '://' not in str(item) and osp.exists(item) and \
                osp.realpath(item) == real:
            return f'{path} is an input of this run ({item}): it would be overwritten'
    if osp.exists(path):
        if directory and not osp.isdir(path):
            return f'{path} exists and is not a directory'
        if not directory and osp.isdir(path):
            return f'{path} is a directory, not a file'
        return None if os.access(path, os.W_OK) else f'{path} is not writable'
    parent = osp.dirname(osp.abspath(path))
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        return f'{parent} (on the way to {path}) is not a directory'
    if not os.access(parent, os.W_OK | os.X_OK):
        return f'cannot create {path}: {parent} is not writable'
    return None


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


def names_hook(cfg: Config, name: str) -> bool:
    """Whether ``cfg.custom_hooks`` holds a hook of type ``name``."""
    for hook in cfg.get('custom_hooks') or []:
        kind = hook.get('type') if hasattr(hook, 'get') else type(hook)
        if kind == name or getattr(kind, '__name__', None) == name:
            return True
    return False


def wants_trust(args: argparse.Namespace, cfg: Config) -> bool:
    """``--trust-checkpoint`` or ``trust_checkpoint = True`` in the config."""
    return bool(args.trust_checkpoint or cfg.get('trust_checkpoint', False))


def run_runner(cfg: Config,
               args: argparse.Namespace,
               mode: str,
               data_splits: Sequence[str],
               prepare: Optional[Callable[[Runner], None]] = None) -> int:
    """Build the Runner and run ``mode`` (``'train'`` or ``'test'``) with
    the run's checkpoint policy: safe loading unless the user opted in
    (:func:`wants_trust`), for this run only.

    Image loading is checked (:class:`~mmvit3.datasets.CheckedImageLoadingHook`,
    added unless the config names it: a bad image file is an error naming
    it, or skipped in training with the config's ``skip_bad_images``; the
    config the Runner saves keeps ``LoadImageFromFile``) and, for
    training, mixed precision on a machine without a GPU is refused
    (:func:`~mmvit3.utils.errors.check_amp`). A
    ``load_from`` / ``resume`` checkpoint that does not fit the ViT3
    model (:class:`~mmvit3.engine.CheckpointSafetyHook`, which
    :func:`add_run_hooks` gives the run with mmvit3's other hooks), a refused checkpoint or a
    mixed-precision request, a corrupt checkpoint, one with NaN / Inf weights
    or a work dir held by a live run is a message on stderr and exit status
    2, not a traceback, and a loss that stopped being finite (training
    diverged) exit status 3; a misspelt ``type`` in the config
    raises :class:`~mmvit3.utils.errors.UnknownTypeError` naming the
    registry and close registered names.

    First of all, the data of ``data_splits`` must be on disk
    (:func:`~mmvit3.utils.data_check.check_data`): a missing path is a
    message on stderr (its commands rewritten to work from the current
    directory) and exit status 2. Without CUDA, glibc's malloc then
    keeps freed memory for the next step
    (:func:`~mmvit3.utils.malloc.keep_freed_memory`; ``MMVIT3_MALLOC=default``
    turns it off).

    Args:
        cfg (Config): The config.
        args (argparse.Namespace): The tool's arguments.
        mode (str): The Runner method to call.
        data_splits (Sequence[str]): The splits whose data the run reads
            (``'train'``, ``'val'``, ``'test'``).
        prepare (callable, optional): Called with the Runner before it runs.
            Defaults to None.

    Returns:
        int: The tool's exit status.
    """
    try:
        check_data(cfg, data_splits)
        check_annotations(cfg, data_splits)
    except DatasetNotFoundError as err:
        message = str(err)
        if isinstance(cfg.get('data_root'), str):
            message += ('\n\nData elsewhere: one override points every '
                        'dataloader and evaluator at it: --cfg-options '
                        'data_root=PATH/')
        print(commands_from_here(message), file=sys.stderr)
        return 2
    except BadAnnotationError as err:
        print(err, file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        try:
            if keep_freed_memory():
                print_log(f'CPU run: malloc keeps freed memory for the next step '
                          f'(faster; {MALLOC_ENV_VAR}=default turns it off)',
                          logger='current')
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
    if config_scope(cfg) == 'mmdet':
        # fewer repeated torch.compile recompilations, as mmdet's tools do
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    add_run_hooks(cfg)
    set_opt_in_hint(TOOLS_HINT)
    try:
        if mode == 'train':
            check_amp(cfg)
            if int(os.environ.get('RANK', 0)) == 0:
                hold_work_dir(cfg.work_dir)  # before the Runner writes there
        with explain_unknown_types(cfg), \
                trust_checkpoints(wants_trust(args, cfg)), \
                allow_nonfinite_weights(cfg.get('allow_nonfinite_weights', False)):
            runner = build_runner(cfg)
            if not names_hook(cfg, CHECKED_LOADING_HOOK):
                # checked loading without changing the config the Runner saves
                runner.register_hook(CheckedImageLoadingHook())
            if prepare is not None:
                prepare(runner)
            getattr(runner, mode)()
    except (UnsafeCheckpointError, CorruptCheckpointError,
            CheckpointDownloadError, CheckpointNotFoundError,
            NonFiniteCheckpointError, AmpUnavailableError,
            CheckpointMismatchError, WorkDirBusyError) as err:
        print(err, file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(err, file=sys.stderr)
        return 3
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and \
                not re.search(r"can't allocate memory|out of memory", str(err)):
            raise
        print(out_of_memory_message(cfg, data_splits, err), file=sys.stderr)
        return 1
    finally:
        set_opt_in_hint(None)
    return 0
