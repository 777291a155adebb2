# Copyright (c) mmvit3 authors. All rights reserved.
"""Saving checkpoints so that none is lost, and finding one to resume from.

mmengine's ``CheckpointHook`` deletes the oldest checkpoint *before* it
writes the next one, writes the file in place and then points
``last_checkpoint`` at it: a save that fails (full disk, quota, a kill)
leaves a partial file, or no checkpoint at all with ``max_keep_ckpts=1``,
and ``last_checkpoint`` may name a file that is gone. A run that diverged
keeps rotating NaN checkpoints until the last good one is deleted.

:class:`SafeCheckpointHook` (same arguments) writes each checkpoint to a
temporary name, renames it into place once it is complete, only then
rotates the old ones out and rewrites ``last_checkpoint`` (also by rename);
it refuses to save weights that hold NaN / Inf, keeping the finite
checkpoints. :func:`find_resumable_checkpoint` picks the newest readable
checkpoint of a work dir when ``last_checkpoint`` is missing, empty, stale
or names an unreadable file.
"""
import logging
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..safe_load import nonfinite_tensors

_STEP = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
TMP_SUFFIX = '.tmp'


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so
    that ``path`` is always either the old or the new content."""
    tmp = f'{path}.{os.getpid()}{TMP_SUFFIX}'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a complete checkpoint (from its structure,
    without loading it), or None."""
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty'
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith('data.pkl') for n in archive.namelist()):
                return 'is a zip archive without a pickled checkpoint'
    except zipfile.BadZipFile:
        with open(path, 'rb') as f:
            if f.read(1) == b'\x80':  # legacy pickle format: cannot tell
                return None
        return 'is incomplete or corrupt'
    return None


def _candidates(work_dir: str) -> List[Tuple[int, float, str]]:
    found = []
    for name in os.listdir(work_dir):
        match = _STEP.match(name)
        if match:
            path = osp.join(work_dir, name)
            found.append((int(match.group(1)), osp.getmtime(path), path))
    return sorted(found, reverse=True)


def find_resumable_checkpoint(work_dir: str) -> Tuple[Optional[str], str]:
    """The checkpoint to resume from in ``work_dir``: the one
    ``last_checkpoint`` names if it is readable, else the newest readable
    ``iter_*.pth`` / ``epoch_*.pth`` (by step, then time); and a sentence
    saying why it was taken (or why none was)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if not named:
            why = f'{pointer} is empty'
        else:
            problem = checkpoint_problem(named)
            if problem is None:
                match = _STEP.match(osp.basename(named))
                step = int(match.group(1)) if match else None
                for other_step, _, path in (_candidates(work_dir)
                                            if step is not None else []):
                    if other_step > step and checkpoint_problem(path) is None:
                        return path, (f'{pointer} names {named}, but {path} '
                                      f'is newer and readable (the run ended '
                                      f'between saving it and updating '
                                      f'{pointer})')
                return named, f'{pointer} names it'
            why = f'{pointer} names {named}, which {problem}'
    else:
        why = f'there is no {pointer}'
    skipped = []
    for _, _, path in _candidates(work_dir) if osp.isdir(work_dir) else []:
        if path == named:
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            skipped_text = (f' (skipped: {"; ".join(skipped)})' if skipped else '')
            return path, (f'{why}; {path} is the newest readable checkpoint '
                          f'in the work dir{skipped_text}')
        skipped.append(f'{osp.basename(path)} {problem}')
    return None, f'{why}, and the work dir holds no readable checkpoint' + (
        f' ({"; ".join(skipped)})' if skipped else '')


class _DeferredRemoval:
    """A file backend whose ``remove`` / ``rmtree`` only note the path."""

    def __init__(self, backend, deferred: list) -> None:
        self._backend = backend
        self._deferred = deferred

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, path) -> None:
        self._deferred.append(('remove', path))

    def rmtree(self, path) -> None:
        self._deferred.append(('rmtree', path))


class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) that loses nothing:
    write to a temporary file, rename it into place, then delete the
    checkpoints beyond ``max_keep_ckpts`` and rewrite ``last_checkpoint``;
    with ``save_best``, the previous best checkpoint is removed only after
    the new one is written; weights holding NaN / Inf are not saved (an
    error is logged, and the finite checkpoints are kept).

    Local work dirs only; with another storage backend it behaves as
    mmengine's hook.
    """

    def _local(self) -> bool:
        from mmengine.fileio import LocalBackend
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's, with the previous best checkpoint removed only after
        the new one is written."""
        if not self._local():
            return super()._save_best_checkpoint(runner, metrics)
        real, deferred = self.file_backend, []
        self.file_backend = _DeferredRemoval(real, deferred)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = real
        current = {getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for kind, path in deferred:
            if path not in current:
                getattr(real, kind)(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bad, count = nonfinite_tensors(model.state_dict())
        ckpt_filename = self.filename_tmpl.format(step)
        if count:
            print_log(
                f'Not saving {ckpt_filename}: the weights hold NaN / Inf in '
                f'{count} tensors ({", ".join(bad[:3])}...); the training '
                f'diverged. The finite checkpoints are kept'
                + (f' (last: {self.last_ckpt})' if getattr(self, 'last_ckpt', None)
                   else '') + '.',
                logger='current', level=logging.ERROR)
            return
        final = osp.join(self.out_dir, ckpt_filename)
        tmp_name = f'{ckpt_filename}{TMP_SUFFIX}'
        tmp = osp.join(self.out_dir, tmp_name)
        try:
            runner.save_checkpoint(
                self.out_dir,
                tmp_name,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
            if not is_main_process():
                return
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
        except BaseException:  # full disk, Ctrl-C...: no partial file stays
            if is_main_process() and osp.exists(tmp):
                os.remove(tmp)
            raise
        os.replace(tmp, final)  # complete: only now does it replace anything
        self.last_ckpt = final
        runner.message_hub.update_info('last_ckpt', final)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), final)
        if self.max_keep_ckpts > 0:
            if not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step:
                ids = list(self.keep_ckpt_ids) + [step]
                while len(ids) > self.max_keep_ckpts:
                    old = osp.join(self.out_dir, self.filename_tmpl.format(ids.pop(0)))
                    if old != final and osp.isfile(old):
                        os.remove(old)
                self.keep_ckpt_ids.clear()
                self.keep_ckpt_ids.extend(ids)
                runner.message_hub.update_info('keep_ckpt_ids', ids)
