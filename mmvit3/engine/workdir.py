# Copyright (c) mmvit3 authors. All rights reserved.
"""One training run per work dir: a lock file holding the pid, host and
start time of the run that writes there (:func:`hold_work_dir`), taken by
``tools/train.py`` before the Runner is built and by
:class:`WorkDirLockHook` for other tools; and a new run never replaces the
checkpoints of an earlier one unless asked (:func:`check_new_run`)."""
import atexit
import logging
import os
import os.path as osp
import re
import socket
import time
from typing import List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ..errors import EarlierRunError, WorkDirBusyError
from ..config import config_flag

LOCK_NAME = '.mmvit3_train.lock'
#: The files of a run's checkpoints in its work dir.
_CHECKPOINT = re.compile(r'^(?:(?:iter|epoch)_\d+|best_.+)\.pth$')


def earlier_checkpoints(work_dir: str) -> List[str]:
    """The checkpoints (``iter_*.pth``, ``epoch_*.pth``, ``best_*.pth``) a
    run left in ``work_dir``, sorted."""
    if not osp.isdir(work_dir):
        return []
    return sorted(name for name in os.listdir(work_dir) if _CHECKPOINT.match(name))


def check_new_run(work_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse to start a training run (not ``resume``) in a work dir that
    holds the checkpoints of an earlier one, unless ``overwrite``.

    Raises:
        EarlierRunError: Naming the work dir, its checkpoints and the choices.
    """
    found = earlier_checkpoints(work_dir)
    if found and not resume and not overwrite:
        shown = ', '.join(found[:4]) + (f' ... ({len(found)} in all)' if len(found) > 4 else '')
        raise EarlierRunError(
            f'The work dir {work_dir} holds the checkpoints of an earlier run ({shown}): a '
            f'new run would replace them. Continue that run with --resume, train into '
            f'another --work-dir, or replace them with --overwrite (tools/train.py) / '
            f'overwrite_checkpoints = True in the config.')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hold_work_dir(work_dir: str) -> str:
    """Take ``WORK_DIR/.mmvit3_train.lock`` for this process (pid, host,
    start time), creating the folder; a lock of a process that is gone is
    taken over with a message. Idempotent; released at exit or by
    :func:`release_work_dir`; the lock's path.

    Raises:
        WorkDirBusyError: A live process (or one on another host) holds it.
    """
    path = osp.abspath(osp.join(work_dir, LOCK_NAME))
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
                return path  # held already
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
        atexit.register(release_work_dir, path)
        break
    return path


def release_work_dir(path: str) -> None:
    """Remove the lock ``path`` if this process holds it."""
    try:
        with open(path) as f:
            parts = f.read().split()
        if parts and parts[0] == str(os.getpid()):
            os.remove(path)
    except OSError:
        pass


class WorkDirLockHook(Hook):
    """Refuse a second training run on a work dir that a live run holds,
    instead of letting both write the same checkpoints
    (:func:`hold_work_dir` before training, released when the run ends), and
    a new run where an earlier one left checkpoints (:func:`check_new_run`;
    ``overwrite_checkpoints = True`` allows it).
    ``tools/train.py`` takes the lock before the Runner is built, so that
    not even the config dump of a live run is replaced. Main process only."""
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._path: Optional[str] = None

    def before_train(self, runner) -> None:
        if is_main_process():
            check_new_run(runner.work_dir, bool(runner._resume),
                          config_flag(runner.cfg, 'overwrite_checkpoints'))
            self._path = hold_work_dir(runner.work_dir)

    def after_run(self, runner) -> None:
        if self._path:
            release_work_dir(self._path)
            self._path = None
