# Copyright (c) mmvit3 authors. All rights reserved.
"""What the tools share before a Runner exists: the exit-status wrapper
(:func:`tool_main`), the common options (:func:`add_common_args`), reading
a config with them (:func:`apply_common_args`), distributed runs on machines
without CUDA (:func:`adapt_to_cpu_distributed`) and the checks of outputs
and mixed precision."""
import argparse
import functools
import logging
import os
import os.path as osp
import sys
import traceback
from typing import Any, Callable, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from ..config import (check_project_keys, config_flag, config_scope, load_config,
                      merge_overrides, override_problem, typed_dicts)
from ..datasets import same_file
from ..errors import AmpUnavailableError, ConfigError, MMViT3Error, exit_status
from .paths import propagate_data_root, resolve_against_repo

#: Launchers of ``--launcher`` (mmengine's ``init_dist``).
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
#: Environment variable: ``1`` prints the traceback of a user mistake too.
DEBUG_ENV_VAR = 'MMVIT3_DEBUG'

#: Norm layer types that need CUDA (or another accelerator) in a
#: distributed run, and their single-device equivalent.
_SYNC_NORMS = {'SyncBN': 'BN', 'MMSyncBN': 'BN'}


def tool_main(tool: str) -> Callable:
    """Decorator of a tool's ``main``: an mmvit3 error (a user's mistake, a
    diverged run) is one message on stderr and its exit status
    (:func:`mmvit3.errors.exit_status`), without a traceback unless
    ``MMVIT3_DEBUG=1``; anything else propagates (a bug: exit status 1)."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:

        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except MMViT3Error as err:
                if os.environ.get(DEBUG_ENV_VAR, '') not in ('', '0'):
                    traceback.print_exc()
                print(f'{tool}: {error_message(err)}', file=sys.stderr)
                return exit_status(err)

        return run

    return wrap


def error_message(err: BaseException) -> str:
    """The message of ``err``; one re-raised by a DataLoader worker carries
    the worker's traceback, of which only its own last line counts."""
    text = str(err)
    marker = f'{type(err).__name__}: '
    if 'Original Traceback' in text and marker in text:
        return text[text.rindex(marker) + len(marker):].strip()
    return text


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` that names a bad item (no ``=``, an empty key
    part, a dict value, unbalanced brackets) with what would be accepted,
    instead of failing with a traceback, and keeps the spaces of a single
    value (a path)."""

    @staticmethod
    def _parse_iterable(val: str):
        # mmengine removes every space from a value: a single value (a path)
        # keeps its spaces here
        text = val.strip('\'"')
        if ' ' in text and ',' not in text and not text.startswith(('[', '(')):
            return DictAction._parse_int_float_bool(text)
        return DictAction._parse_iterable(val)

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            problem = override_problem(item)
            if problem:
                parser.error(f'{option_string} {item!r}: {problem}')
        super().__call__(parser, namespace, values, option_string)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of every tool that reads a config and a checkpoint:
    ``--cfg-options`` and ``--trust-checkpoint``."""
    add_cfg_options(parser)
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='fully unpickle the checkpoints this run loads (can run code '
        'from the file): only for files you trust. Same as '
        '`trust_checkpoint = True` in the config')


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--cfg-options`` (:class:`CfgOptionsAction`)."""
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


def wants_trust(args: argparse.Namespace, cfg: Config) -> bool:
    """``--trust-checkpoint`` or ``trust_checkpoint = True`` in the config."""
    return bool(args.trust_checkpoint or config_flag(cfg, 'trust_checkpoint'))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the options train and test take: ``--work-dir``, those of
    :func:`add_config_args`, ``--launcher`` and ``--local-rank``."""
    parser.add_argument(
        '--work-dir',
        help='the directory for logs, checkpoints and metrics (default: '
        'the config\'s work_dir, else ./work_dirs/CONFIG_NAME)')
    add_config_args(parser)
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
    against it (:mod:`.paths`).

    Raises:
        ConfigError: The config is not an mmdet / mmseg one, or its launcher
            cannot run on this machine.
        ProjectKeyError: A misspelt mmvit3 key.
    """
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = read_config(args.config, args.cfg_options, tool)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    adapt_to_cpu_distributed(cfg)
    return cfg


def read_config(path: str, cfg_options: Optional[dict], tool: str) -> Config:
    """The config at ``path`` with ``--cfg-options`` merged (a ``data_root``
    override reaching every dataloader and evaluator), relative data paths
    resolved as :func:`apply_common_args` says, its library and mmvit3's
    keys checked.

    Raises:
        ConfigError: The config is not an mmdet / mmseg one.
        ProjectKeyError: A misspelt mmvit3 key.
    """
    cfg = load_config(path)
    file_data_root = cfg.get('data_root')
    if cfg_options:
        merge_overrides(cfg, cfg_options)
        new_root = cfg_options.get('data_root')
        if isinstance(file_data_root, str) and isinstance(new_root, str):
            # the config's data_root was copied into each dataloader and
            # evaluator when it was read: one override reaches them all
            propagate_data_root(cfg, file_data_root, new_root)
    resolve_against_repo(cfg)
    config_scope(cfg, tool)
    check_project_keys(cfg, path)
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
        ConfigError: A launcher other than ``'pytorch'`` without CUDA.
    """
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cfg.get('launcher', 'none') == 'none' or cuda:
        return False
    if cfg.launcher != 'pytorch':
        raise ConfigError(
            f'--launcher {cfg.launcher} needs GPUs (mmengine sets a CUDA '
            f'device per process); without CUDA, run the processes with '
            f'torchrun: tools/dist_train.sh CONFIG NPROC (--launcher '
            f'pytorch), which trains on CPU with the gloo backend.')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    old = dist_cfg.get('backend', 'nccl')
    dist_cfg['backend'] = 'gloo'
    swapped = 0
    for _, node in typed_dicts(cfg.model):
        if node['type'] in _SYNC_NORMS:
            node['type'] = _SYNC_NORMS[node['type']]
            swapped += 1
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


#: the paramwise_cfg keys that multiply the optimizer's weight decay
DECAY_MULTS = ('norm_decay_mult', 'bias_decay_mult', 'dwconv_decay_mult',
               'dcn_decay_mult', 'flat_decay_mult')


def check_weight_decay(cfg: Any) -> None:
    """Raise :class:`~mmvit3.errors.ConfigError` when ``paramwise_cfg``
    multiplies a weight decay the optimizer does not have (mmengine then
    stops with ``base_wd should not be None``), e.g. after switching the
    optimizer by ``--cfg-options optim_wrapper.optimizer.type=SGD``."""
    wrapper = cfg.get('optim_wrapper') or {}
    paramwise = wrapper.get('paramwise_cfg') or {}
    keys = [k for k in DECAY_MULTS if k in paramwise] + [
        f'custom_keys.{name}.decay_mult'
        for name, v in (paramwise.get('custom_keys') or {}).items() if 'decay_mult' in v]
    if keys and (wrapper.get('optimizer') or {}).get('weight_decay') is None:
        raise ConfigError(
            f'optim_wrapper.paramwise_cfg sets {", ".join(keys)}, but '
            f'optim_wrapper.optimizer has no weight_decay to multiply: set one (e.g. '
            f'--cfg-options optim_wrapper.optimizer.weight_decay=0.05)')


def check_amp(cfg: Any, device: Optional[str] = None) -> None:
    """Raise :class:`~mmvit3.errors.AmpUnavailableError` if ``cfg`` trains
    with mmengine's ``AmpOptimWrapper`` (the paper configs, or ``--amp``) on
    a machine without an accelerator, where that wrapper only asserts.

    The message names the overrides that train in float32 or with mmvit3's
    ``BF16AmpOptimWrapper`` instead; the tools do not switch silently (bfloat16
    pays only on CPUs with bfloat16 matrix instructions).

    Args:
        cfg (Config | dict): The config to be trained.
        device (str, optional): ``'cuda'``, ``'npu'``, ``'cpu'``, ...;
            defaults to mmengine's ``get_device()``.
    """
    wrapper = cfg.get('optim_wrapper') or {}
    if wrapper.get('type') != 'AmpOptimWrapper':
        return
    if device is None:
        from mmengine.device import get_device
        device = get_device()
    if device != 'cpu':
        return
    extra = [k for k in ('loss_scale', 'dtype', 'use_fsdp') if k in wrapper]
    remove = (f" (if the config's optim_wrapper also sets {', '.join(extra)}, "
              f'which only AmpOptimWrapper takes, remove that too)'
              if extra else '')
    raise AmpUnavailableError(
        'Mixed-precision training (AmpOptimWrapper) needs a GPU (or an NPU / '
        'MLU / MUSA device), and this machine has none. Here, train in float32 '
        'with\n    --cfg-options optim_wrapper.type=OptimWrapper'
        f'{remove}\nor with bfloat16 autocast of the backbone and neck (fast on '
        'CPUs with avx512_bf16 or AMX; docs/performance_cpu.md) with'
        f'\n    --cfg-options optim_wrapper.type=BF16AmpOptimWrapper{remove}'
        '\n(--amp without AmpOptimWrapper in the config picks the latter).')


def output_problem(path: str, directory: bool = False,
                   inputs: Sequence[str] = ()) -> Optional[str]:
    """Why ``path`` (a file, or with ``directory`` a folder to be created
    if needed) cannot be written, or None; checked before a run so that a
    long evaluation does not end in a failed write. An output that would
    replace one of ``inputs`` (the same file: a hard link or a symlink to
    it counts) is refused too."""
    for item in inputs:
        if item and '://' not in str(item) and same_file(path, item):
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
