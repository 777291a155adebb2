# Copyright (c) mmvit3 authors. All rights reserved.
"""Hooks that make a run safe through any tool that builds an mmengine
Runner (the project's tools add them; a config names them in
``custom_hooks``, as ``configs/_base_/mmvit3_runtime.py`` does, for
mmdet's / mmseg's own tools).

* :class:`CheckpointSafetyHook`: the config's checkpoint opt-ins
  (``trust_checkpoint``, ``allow_nonfinite_weights``,
  ``allow_partial_checkpoint``) for the run; ``resume`` from the newest
  readable checkpoint when ``last_checkpoint`` does not name one; a
  checkpoint that does not fit the model refused before it loads; mmengine's
  ``CheckpointHook`` upgraded to :class:`SafeCheckpointHook`.
* :class:`WorkDirLockHook`: one training run per work dir.
* :class:`NonFiniteLossHook`: a NaN / Inf loss stops training.
"""
import atexit
import logging
import math
import os
import os.path as osp
import socket
import time
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import BaseLoop

from ..models.checkpoint import (CheckpointMismatchError, check_has_weights,
                                 check_model_checkpoint)
from .. import safe_load
from .checkpointing import SafeCheckpointHook, find_resumable_checkpoint


def _training(runner) -> bool:
    """Whether the runner is in ``train()`` (its train loop is built)."""
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


def unwrapped_model(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if isinstance(model, BaseTTAModel):
        model = model.module
    return model


class CheckpointSafetyHook(Hook):
    """The checkpoint policy of a run, from its config.

    Before the run: ``trust_checkpoint = True`` fully unpickles the files
    this run loads (only for files you trust), ``allow_nonfinite_weights =
    True`` loads weights holding NaN / Inf; both end with the run. A
    ``resume`` without a file (``--resume``) takes the newest readable
    checkpoint of the work dir when ``last_checkpoint`` is missing, empty,
    stale or names an unreadable file, and logs which. A plain
    ``CheckpointHook`` becomes a :class:`SafeCheckpointHook`.

    After a checkpoint is read and before it is loaded: one that does not
    fit the model (another arch, task or head layout) is refused
    (:func:`~mmvit3.models.checkpoint.check_model_checkpoint`; strict, entry
    by entry, except for ``load_from`` in training, where heads of other
    shapes are skipped by mmengine for fine-tuning);
    ``allow_partial_checkpoint = True`` turns the check off.
    """
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._restore = []

    def before_run(self, runner) -> None:
        cfg = runner.cfg
        if cfg.get('trust_checkpoint', False):
            self._restore.append(safe_load.trust_checkpoints(True))
        if cfg.get('allow_nonfinite_weights', False):
            self._restore.append(safe_load.allow_nonfinite_weights(True))
        if not safe_load.opt_in_hint_set():  # a stock tool: the config key
            safe_load.set_opt_in_hint(safe_load.CONFIG_HINT)
        for hook in runner.hooks:
            if type(hook) is CheckpointHook:  # same state, safer saving
                hook.__class__ = SafeCheckpointHook
        if _training(runner) and runner._resume and runner._load_from is None:
            chosen, why = find_resumable_checkpoint(runner.work_dir)
            if chosen is not None and why.endswith('names it'):
                return  # mmengine's own auto-resume takes it
            if chosen is None:
                print_log(f'Resume: nothing to resume from ({why}); training '
                          f'starts from the beginning.', logger='current',
                          level=logging.WARNING)
                return
            print_log(f'Resume: taking {chosen}: {why}.', logger='current',
                      level=logging.WARNING)
            runner._load_from = chosen

    def after_run(self, runner) -> None:
        while self._restore:
            self._restore.pop().__exit__(None, None, None)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if runner.cfg.get('allow_partial_checkpoint', False):
            return
        strict = not (_training(runner) and not runner._resume)
        try:
            model = unwrapped_model(runner)
            check_has_weights(model, checkpoint)
            check_model_checkpoint(model, checkpoint, strict)
        except CheckpointMismatchError as err:
            source = runner._load_from or 'the checkpoint to resume from'
            raise CheckpointMismatchError(
                f'{source}: {err} (To load what fits anyway: '
                f'allow_partial_checkpoint = True in the config.)') from None


class WorkDirBusyError(RuntimeError):
    """Another live training run holds the work dir."""


LOCK_NAME = '.mmvit3_train.lock'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The lock this process holds (path), released at exit.
_HELD = {}


def hold_work_dir(work_dir: str) -> str:
    """Take ``WORK_DIR/.mmvit3_train.lock`` for this process (pid, host,
    start time), creating the folder; a lock of a process that is gone is
    taken over with a message. Idempotent; released at exit or by
    :func:`release_work_dir`; the lock's path.

    Raises:
        WorkDirBusyError: A live process (or one on another host) holds it.
    """
    path = osp.abspath(osp.join(work_dir, LOCK_NAME))
    if path in _HELD:
        return path
    os.makedirs(work_dir, exist_ok=True)
    host = socket.gethostname()
    mine = f'{os.getpid()} {host} {time.strftime("%Y-%m-%d %H:%M:%S")}\n'
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    parts = f.read().split()
            except FileNotFoundError:
                continue  # released meanwhile: try again
            pid = int(parts[0]) if parts and parts[0].isdigit() else -1
            other_host = parts[1] if len(parts) > 1 else host
            started = ' '.join(parts[2:4]) or 'at an unknown time'
            if pid == os.getpid() and other_host == host:
                break
            if other_host != host or (pid > 0 and _alive(pid)):
                where = f'pid {pid}' + (f' on {other_host}' if other_host != host else '')
                raise WorkDirBusyError(
                    f'The work dir {work_dir} is in use by another training '
                    f'run ({where}, started {started}): two runs there would '
                    f'overwrite each other\'s checkpoints. Use another '
                    f'--work-dir, or wait for that run to end. If no such run '
                    f'is alive, delete {path}.')
            print_log(f'Taking over the lock {path} of a run that is gone '
                      f'(pid {pid}, started {started}).', logger='current',
                      level=logging.WARNING)
            os.remove(path)
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(mine)
        break
    _HELD[path] = True
    if len(_HELD) == 1:
        atexit.register(release_work_dir)
    return path


def release_work_dir(path: Optional[str] = None) -> None:
    """Remove the lock ``path`` (default: every lock) this process holds."""
    for held in [path] if path else list(_HELD):
        if _HELD.pop(held, None) is None:
            continue
        try:
            with open(held) as f:
                parts = f.read().split()
            if parts and parts[0] == str(os.getpid()):
                os.remove(held)
        except OSError:
            pass


class WorkDirLockHook(Hook):
    """Refuse a second training run on a work dir that a live run holds,
    instead of letting both write the same checkpoints
    (:func:`hold_work_dir` before training, released when the run ends).
    ``tools/train.py`` takes the lock before the Runner is built, so that
    not even the config dump of a live run is replaced. Main process only."""
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._path: Optional[str] = None

    def before_train(self, runner) -> None:
        if is_main_process():
            self._path = hold_work_dir(runner.work_dir)

    def after_run(self, runner) -> None:
        if self._path:
            release_work_dir(self._path)
            self._path = None


class NonFiniteLossError(FloatingPointError):
    """The training loss was NaN / Inf for too many iterations."""


class NonFiniteLossHook(Hook):
    """Stop training with :class:`NonFiniteLossError` when the loss is NaN or
    Inf for ``patience`` consecutive iterations (runs before the checkpoint
    hook, so no checkpoint of that iteration is written).

    Args:
        patience (int, optional): Consecutive non-finite iterations before
            stopping; 1 stops at the first. Defaults to 1, or to
            :attr:`AMP_PATIENCE` with mixed precision (``AmpOptimWrapper``),
            whose loss scaler skips the steps of an overflow and lowers the
            scale, so that a few in a row are no divergence.
    """
    priority = 'VERY_HIGH'
    AMP_PATIENCE = 10

    def __init__(self, patience: Optional[int] = None) -> None:
        if patience is not None and int(patience) < 1:
            raise ValueError(f'NonFiniteLossHook: patience must be >= 1, got {patience!r}')
        self._given = None if patience is None else int(patience)
        self.patience = self._given or 1
        self._count = 0

    def before_train(self, runner) -> None:
        if self._given is None:
            from mmengine.optim import AmpOptimWrapper
            amp = isinstance(getattr(runner, 'optim_wrapper', None), AmpOptimWrapper)
            self.patience = self.AMP_PATIENCE if amp else 1

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not isinstance(outputs, dict):
            return
        values = {k: v for k, v in outputs.items()
                  if 'loss' in k and isinstance(v, (torch.Tensor, float, int))}
        bad = {}
        for k, v in values.items():
            value = float(v.detach().float().sum()) if isinstance(v, torch.Tensor) else float(v)
            if not math.isfinite(value):
                bad[k] = value
        if get_world_size() > 1:  # every process stops at the same iteration
            flag = torch.tensor([float(bool(bad))])
            all_reduce(flag, op='sum')
            if float(flag) and not bad:
                bad = {'loss (of another process)': float('nan')}
        if not bad:
            self._count = 0
            return
        self._count += 1
        terms = ', '.join(f'{k}={v}' for k, v in bad.items())
        if self._count < self.patience:
            print_log(f'Iteration {runner.iter + 1}: non-finite loss ({terms}), '
                      f'{self._count} of {self.patience} tolerated.',
                      logger='current', level=logging.WARNING)
            return
        last = runner.message_hub.get_info('last_ckpt')
        raise NonFiniteLossError(
            f'Training stopped at iteration {runner.iter + 1}: the loss is '
            f'not finite ({terms}) for {self._count} consecutive '
            f'iteration(s). The run diverged: lower the learning rate '
            f'(optim_wrapper.optimizer.lr), clip gradients '
            f'(optim_wrapper.clip_grad=dict(max_norm=...)) or lengthen the '
            f'warm-up, and resume or restart'
            + (f'; the last checkpoint with finite weights is {last}' if last else '')
            + '. To tolerate a few such iterations: '
            "custom_hooks=[dict(type='NonFiniteLossHook', patience=N)].")


def _leaf_datasets(dataset):
    """The datasets inside wrappers (``dataset`` / ``datasets``)."""
    inner = getattr(dataset, 'datasets', None)
    if isinstance(inner, (list, tuple)):
        for d in inner:
            yield from _leaf_datasets(d)
        return
    inner = getattr(dataset, 'dataset', None)
    if inner is not None and not isinstance(inner, (str, dict)):
        yield from _leaf_datasets(inner)
        return
    yield dataset


class DataCheckHook(Hook):
    """Check the annotations of the run's built datasets before it starts,
    for mmdet's / mmseg's own tools (``tools/train.py`` and ``tools/test.py``
    check them before building, and this hook then does nothing): COCO
    files' dropped annotations as counted warnings, segmentation label maps
    (:func:`~mmvit3.utils.data_check.check_seg_labels`) as errors."""
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        from ..utils import data_check
        if data_check.ANNOTATIONS_CHECKED[0] or \
                runner.cfg.get('check_annotations', True) is False:
            return
        for mode in ('train', 'val', 'test'):
            loop = getattr(runner, f'_{mode}_loop', None)
            if not isinstance(loop, BaseLoop):
                continue
            for dataset in _leaf_datasets(loop.dataloader.dataset):
                self._check(dataset, mode == 'train')

    @staticmethod
    def _check(dataset, training: bool) -> None:
        from ..utils import data_check
        ann_file = getattr(dataset, 'ann_file', '') or ''
        meta = getattr(dataset, 'metainfo', {}) or {}
        if ann_file.endswith('.json') and osp.isfile(ann_file):
            filter_cfg = getattr(dataset, 'filter_cfg', None) if training else None
            for line in data_check.check_coco_file(ann_file, meta.get('classes'),
                                                   filter_cfg):
                print_log(line, logger='current', level=logging.WARNING)
        elif hasattr(dataset, 'seg_map_suffix') and \
                not getattr(dataset, 'label_map', None):
            pairs = [(info['img_path'], info['seg_map_path'])
                     for info in map(dataset.get_data_info, range(len(dataset)))
                     if info.get('seg_map_path')]
            data_check.check_seg_labels(
                pairs, len(meta.get('classes', ())),
                bool(getattr(dataset, 'reduce_zero_label', False)),
                getattr(dataset, 'ignore_index', 255))
