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
* :class:`DataCheckHook`: the dataset check before the run.
* :class:`NonFiniteLossHook`: a diverging run (a NaN / Inf or exploding
  loss, non-finite weights) stops.
"""
import contextlib
import functools
import logging
import math
from typing import Any, Callable, List, Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import BaseLoop

from .. import safe_load
from ..datasets import check_annotations
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


DIVERGED_HINT = ('The run diverged: lower the learning rate (optim_wrapper.optimizer.lr), clip '
                 'gradients (optim_wrapper.clip_grad=dict(max_norm=...)) or lengthen the '
                 'warm-up, and resume or restart')


class NonFiniteLossHook(Hook):
    """Stop a diverging training run with :class:`NonFiniteLossError`,
    whatever its optimizer: the loss is NaN / Inf, or more than
    ``max_loss_ratio`` times its size in the run's first iterations (SGD
    with a huge lr makes it explode while it is still finite), for
    ``patience`` consecutive iterations; or the weights hold NaN / Inf
    after the last iteration's step or before a validation (where no next
    loss would show it). Runs before the checkpoint hook, so no checkpoint
    of that iteration is written.

    Args:
        patience (int, optional): Consecutive bad iterations before
            stopping; 1 stops at the first. Defaults to 1, or to
            :attr:`AMP_PATIENCE` with mixed precision (``AmpOptimWrapper``),
            whose loss scaler skips the steps of an overflow and lowers the
            scale, so that a few in a row are no divergence.
        max_loss_ratio (float, optional): How many times the median loss of
            the first :attr:`REFERENCE_ITERS` iterations a loss may reach;
            None turns the check off. Defaults to 1e4.
    """
    priority = 'VERY_HIGH'
    AMP_PATIENCE = 10
    REFERENCE_ITERS = 5

    def __init__(self, patience: Optional[int] = None,
                 max_loss_ratio: Optional[float] = 1e4) -> None:
        if patience is not None and int(patience) < 1:
            raise ValueError(f'NonFiniteLossHook: patience must be >= 1, got {patience!r}')
        if max_loss_ratio is not None and not float(max_loss_ratio) > 1:
            raise ValueError(f'NonFiniteLossHook: max_loss_ratio must be > 1 or None, '
                             f'got {max_loss_ratio!r}')
        self._given = None if patience is None else int(patience)
        self.patience = self._given or 1
        self.max_loss_ratio = None if max_loss_ratio is None else float(max_loss_ratio)
        self._count = 0
        self._first: List[float] = []  # the first finite total losses of the run

    def before_train(self, runner) -> None:
        if self._given is None:
            from mmengine.optim import AmpOptimWrapper
            amp = isinstance(getattr(runner, 'optim_wrapper', None), AmpOptimWrapper)
            self.patience = self.AMP_PATIENCE if amp else 1

    def _exploded(self, values: dict) -> Optional[str]:
        """Why the finite total loss of ``values`` counts as divergence, or
        None; the first losses of the run are kept as the reference."""
        total = values.get('loss', sum(values.values()) if values else None)
        if total is None or self.max_loss_ratio is None:
            return None
        total = float(total.detach().float().sum()) if isinstance(total, torch.Tensor) \
            else float(total)
        if not self._first:
            self._first.append(total)
            return None
        reference = sorted(self._first)[len(self._first) // 2]
        if len(self._first) < self.REFERENCE_ITERS:
            self._first.append(total)
        if reference > 0 and total > self.max_loss_ratio * reference:
            return (f'loss={total:.4g}, {total / reference:.3g} times its '
                    f'{reference:.4g} of the first iterations (max_loss_ratio='
                    f'{self.max_loss_ratio:g})')
        return None

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
        terms = ', '.join(f'{k}={v}' for k, v in bad.items())
        what = f'the loss is not finite ({terms})'
        if not bad:
            exploded = self._exploded(values)
            if exploded:
                bad, what = {'loss': exploded}, f'the loss exploded ({exploded})'
        if get_world_size() > 1:  # every process stops at the same iteration
            flag = torch.tensor([float(bool(bad))])
            all_reduce(flag, op='sum')
            if float(flag) and not bad:
                bad = {'loss (of another process)': float('nan')}
                what = 'the loss of another process is not finite or exploded'
        if not bad:
            self._count = 0
            if runner.iter + 1 >= runner.max_iters:
                self._check_weights(runner, f'after the step of iteration {runner.iter + 1}, '
                                    f'the last')
            return
        self._count += 1
        if self._count < self.patience:
            print_log(f'Iteration {runner.iter + 1}: {what}, '
                      f'{self._count} of {self.patience} tolerated.',
                      logger='current', level=logging.WARNING)
            return
        last = runner.message_hub.get_info('last_ckpt')
        raise NonFiniteLossError(
            f'Training stopped at iteration {runner.iter + 1}: {what} for {self._count} '
            f'consecutive iteration(s). {DIVERGED_HINT}'
            + (f'; the last checkpoint with finite weights is {last}' if last else '')
            + '. To tolerate a few such iterations: '
            "custom_hooks=[dict(type='NonFiniteLossHook', patience=N)].")

    def before_val(self, runner) -> None:
        if _training(runner):
            self._check_weights(runner, f'before the validation at iteration {runner.iter}')

    @staticmethod
    def _check_weights(runner, when: str) -> None:
        """Raise :class:`NonFiniteLossError` if the model's weights hold
        NaN / Inf (one sum per tensor; the names only when one is bad)."""
        model = unwrapped_model(runner)
        params = [p.detach() for p in model.parameters() if p.numel()]
        if not params or bool(torch.isfinite(torch.stack([p.sum().float() for p in params])).all()):
            return
        names, count = safe_load.nonfinite_tensors(model.state_dict())
        if not count:
            return  # finite values whose sum overflows
        raise NonFiniteLossError(
            f'Training stopped {when}: the weights hold NaN / Inf in {count} tensors '
            f'({", ".join(names[:3])}{", ..." if count > 3 else ""}) after the optimizer '
            f'step. {DIVERGED_HINT}.')


class DataCheckHook(Hook):
    """Check the data of the run's built loops before it starts, for mmdet's
    / mmseg's own tools (``tools/train.py`` and ``tools/test.py`` check it
    before building and set ``done``, so that this hook does nothing): the
    dataset check of :func:`~mmvit3.datasets.check_annotations` on the
    run's config, for the splits whose loops the run built; its warnings
    logged, its errors raised."""
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.done = False

    def before_run(self, runner) -> None:
        if self.done:
            return
        splits = [mode for mode in ('train', 'val', 'test')
                  if isinstance(getattr(runner, f'_{mode}_loop', None), BaseLoop)]
        if splits:
            check_annotations(runner.cfg, splits)
