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
* :class:`DataCheckHook`: annotations and label maps checked before the
  run.
* :class:`NonFiniteLossHook`: a NaN / Inf loss stops training.
"""
import contextlib
import functools
import logging
import math
import os.path as osp
from typing import Any, Callable, List, Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import BaseLoop

from .. import safe_load
from ..datasets import check_coco_file, check_seg_labels, leaf_datasets
from ..errors import CheckpointMismatchError, NonFiniteLossError
from .checkpointing import SafeCheckpointHook, find_resumable_checkpoint
from .fit import check_has_weights, check_model_checkpoint


def _training(runner) -> bool:
    """Whether the runner is in ``train()`` (its train loop is built)."""
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


def unwrapped_model(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if isinstance(model, BaseTTAModel):
        model = model.module
    return model


def _under_policy(method: Callable, trusted: bool, allow_nonfinite: bool,
                  hint: Optional[str]) -> Callable:
    """``method`` run with the config's checkpoint opt-ins: they hold for
    that call only, and end with it also when it fails."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            if trusted:
                stack.enter_context(safe_load.trust_checkpoints(True))
            if allow_nonfinite:
                stack.enter_context(safe_load.allow_nonfinite_weights(True))
            if hint is not None:
                stack.enter_context(safe_load.set_opt_in_hint(hint))
            return method(*args, **kwargs)

    return run


def optimizer_changes(optimizer: Any, checkpoint: dict) -> List[str]:
    """What the config's optimizer (``optimizer``, as built for this run)
    sets differently from a checkpoint's optimizer state: ``lr`` (each
    group's initial one), ``weight_decay``, ``momentum``, ``betas``, ``eps``."""
    stored = (checkpoint.get('optimizer') or {}).get('param_groups') or []
    groups = getattr(optimizer, 'param_groups', None) or []
    changes = []
    for key in ('lr', 'weight_decay', 'momentum', 'betas', 'eps'):
        pairs = [(g.get('initial_lr', g.get(key)) if key == 'lr' else g.get(key),
                  o.get('initial_lr', o.get(key)) if key == 'lr' else o.get(key))
                 for g, o in zip(stored, groups)]
        differ = [(old, new) for old, new in pairs
                  if old is not None and new is not None and old != new]
        if differ:
            old, new = differ[0]
            changes.append(f'{key} {old} in the checkpoint, {new} in the config')
    return changes


class CheckpointSafetyHook(Hook):
    """The checkpoint policy of a run, from its config.

    Its keys are booleans, read strictly (``'no'`` is an error, not true):
    ``trust_checkpoint = True`` fully unpickles the files this run loads
    (only for files you trust) and ``allow_nonfinite_weights = True`` loads
    weights holding NaN / Inf, each for the run's own loads only (the
    model's initialisation and ``load_from`` / ``resume``), ending with them
    also when they fail. A ``resume`` without a file (``--resume``) takes the
    newest readable checkpoint of the work dir when ``last_checkpoint`` is
    missing, empty, stale or names an unreadable file, and logs which. A
    plain ``CheckpointHook`` becomes a :class:`SafeCheckpointHook`.

    After a checkpoint is read and before it is loaded: one that does not
    fit the model (another arch, task or head layout) is refused
    (:func:`~mmvit3.engine.fit.check_model_checkpoint`; strict, entry
    by entry, except for ``load_from`` in training, where heads of other
    shapes are skipped by mmengine for fine-tuning);
    ``allow_partial_checkpoint = True`` turns the check off. A resume whose
    config sets the optimizer otherwise than the checkpoint (mmengine keeps
    the checkpoint's) says so.
    """
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        cfg = runner.cfg
        trusted = safe_load.config_flag(cfg, 'trust_checkpoint')
        allow_nonfinite = safe_load.config_flag(cfg, 'allow_nonfinite_weights')
        safe_load.config_flag(cfg, 'allow_partial_checkpoint')  # read after loading
        # a stock tool has not said how its user opts in: the config key
        hint = None if safe_load.load_policy().opt_in_hint else safe_load.CONFIG_HINT
        for name in ('_init_model_weights', 'load_or_resume'):
            if hasattr(runner, name):
                setattr(runner, name,
                        _under_policy(getattr(runner, name), trusted, allow_nonfinite, hint))
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

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        resuming = _training(runner) and runner._resume
        optim_wrapper = getattr(runner, 'optim_wrapper', None)
        if resuming and hasattr(optim_wrapper, 'optimizer'):
            changes = optimizer_changes(optim_wrapper.optimizer, checkpoint)
            if changes:
                print_log(
                    f'Resume: the config sets the optimizer otherwise than the checkpoint '
                    f'({"; ".join(changes)}); training continues with the checkpoint\'s '
                    f'optimizer state, as mmengine restores it. To train with the '
                    f'config\'s, start from the checkpoint with load_from instead of '
                    f'resume.', logger='current', level=logging.WARNING)
        if safe_load.config_flag(runner.cfg, 'allow_partial_checkpoint'):
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


class DataCheckHook(Hook):
    """Check the annotations of the run's built datasets before it starts,
    for mmdet's / mmseg's own tools (``tools/train.py`` and ``tools/test.py``
    check them before building and set ``done``, so that this hook does
    nothing): COCO files' dropped annotations as counted warnings,
    segmentation label maps (:func:`~mmvit3.datasets.check_seg_labels`) as
    errors."""
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.done = False

    def before_run(self, runner) -> None:
        if self.done or runner.cfg.get('check_annotations', True) is False:
            return
        for mode in ('train', 'val', 'test'):
            loop = getattr(runner, f'_{mode}_loop', None)
            if not isinstance(loop, BaseLoop):
                continue
            for _, dataset in leaf_datasets(loop.dataloader.dataset):
                self._check(dataset, mode == 'train')

    @staticmethod
    def _check(dataset, training: bool) -> None:
        ann_file = getattr(dataset, 'ann_file', '') or ''
        meta = getattr(dataset, 'metainfo', {}) or {}
        if ann_file.endswith('.json') and osp.isfile(ann_file):
            filter_cfg = getattr(dataset, 'filter_cfg', None) if training else None
            for line in check_coco_file(ann_file, meta.get('classes'), filter_cfg):
                print_log(line, logger='current', level=logging.WARNING)
        elif hasattr(dataset, 'seg_map_suffix') and \
                not getattr(dataset, 'label_map', None):
            pairs = [(info['img_path'], info['seg_map_path'])
                     for info in map(dataset.get_data_info, range(len(dataset)))
                     if info.get('seg_map_path')]
            check_seg_labels(
                pairs, len(meta.get('classes', ())),
                bool(getattr(dataset, 'reduce_zero_label', False)),
                getattr(dataset, 'ignore_index', 255))
