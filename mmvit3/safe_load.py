# Copyright (c) mmvit3 authors. All rights reserved.
"""Loading checkpoint files without running code from them.

``torch.load(weights_only=True)`` unpickles tensors, containers and a short
list of plain types only: a file that pickles any other Python object (a
config object, say, or something crafted to run a command) is refused before
any of its code runs. On top of that list, exactly the types that mmengine
and numpy put in mmengine's own training checkpoints are allowed
(:func:`mmengine_safe_globals`), so training checkpoints load for testing,
``load_from`` and ``resume`` with safety on. Opting in for a file you trust
(``trusted=True``, or :func:`trust_checkpoints` from the tools' flag) is
explicit and logged.

``import mmvit3`` makes mmengine's ``CheckpointLoader`` read local files
through :func:`load_checkpoint_file` (:func:`register_checkpoint_loader`).
"""
import inspect
import logging
import os
import pickle
import re
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.fileio import get_local_path
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader

#: Set by :func:`trust_checkpoints` (the tools' ``--trust-checkpoint`` flag
#: or a config's ``trust_checkpoint = True``): every file loaded while it is
#: on is unpickled in full.
_TRUST_ALL = False


class trust_checkpoints:  # noqa: N801  (used like a function)
    """Opt in to fully unpickling the checkpoints loaded in this process (only
    for files you trust: unpickling can run code from the file).

    Called, it switches the opt-in on (or off) for the rest of the process.
    As a context manager it holds only for the block and restores the
    previous setting on exit, so that nothing loaded afterwards is trusted
    by accident (the tools use it this way)::

        with trust_checkpoints(args.trust_checkpoint):
            runner.train()

    Args:
        enabled (bool): Trust the files loaded. Defaults to True.
    """

    def __init__(self, enabled: bool = True) -> None:
        global _TRUST_ALL
        self._previous = _TRUST_ALL
        _TRUST_ALL = bool(enabled)

    def __enter__(self) -> 'trust_checkpoints':
        return self

    def __exit__(self, *exc_info) -> None:
        global _TRUST_ALL
        _TRUST_ALL = self._previous


def checkpoints_trusted() -> bool:
    """Whether :func:`trust_checkpoints` is on in this process."""
    return _TRUST_ALL


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as mmengine checkpoints use it: a ``HistoryBuffer`` pickles
    its statistics methods as ``getattr(HistoryBuffer, 'mean')``; nothing else
    is reachable."""
    allowed = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a safe load')


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The types mmengine and numpy put in mmengine's training checkpoints:
    the message hub's ``HistoryBuffer`` (with its statistics methods) and
    numpy arrays, scalars and dtypes, under their numpy 1.x and 2.x names."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    found: List[Union[Callable, Tuple[Callable, str]]] = [
        HistoryBuffer, np.ndarray, np.dtype,
        (_history_buffer_getattr, 'builtins.getattr')
    ]
    for name in ('_reconstruct', 'scalar'):
        func = getattr(multiarray, name)
        found += [(func, f'numpy.core.multiarray.{name}'),
                  (func, f'numpy._core.multiarray.{name}')]
    if hasattr(np, 'dtypes'):  # numpy >= 1.25 pickles dtype classes
        found += [c for _, c in inspect.getmembers(np.dtypes, inspect.isclass)
                  if issubclass(c, np.dtype)]
    return found


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled Python objects that safe loading refuses."""


def unsafe_globals(filename: str, error: Optional[BaseException] = None) -> List[str]:
    """The classes and functions a checkpoint file would import when
    unpickled (read without unpickling)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(filename))
    except Exception:  # older torch or an unreadable archive: parse the error
        return re.findall(r'GLOBAL ([\w.]+)', str(error or ''))


def load_checkpoint_file(filename: str,
                         map_location: Any = 'cpu',
                         trusted: bool = False,
                         opt_in_hint: Optional[str] = None) -> Any:
    """Load a checkpoint file (a path or any URI mmengine's file backends
    read), refusing pickled Python objects unless ``trusted``.

    Args:
        filename (str): Path or URI of the file.
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
        trusted (bool): Unpickle everything (can run code from the file):
            only for files you trust. Defaults to False.
        opt_in_hint (str, optional): How the caller's user opts in, for the
            error message. Defaults to a generic sentence.

    Raises:
        FileNotFoundError: No such file.
        UnsafeCheckpointError: The file pickles objects and ``trusted`` is off.
    """
    if '://' not in filename:
        filename = os.path.expanduser(filename)
    if '://' not in filename and not os.path.isfile(filename):
        raise FileNotFoundError(f'Checkpoint file not found: {filename!r}')
    with get_local_path(filename) as local_path:
        if trusted or _TRUST_ALL:
            print_log(
                f'Loading {filename} with full unpickling (trusted): only do '
                f'this for files you trust.', logger='current',
                level=logging.WARNING)
            try:
                return torch.load(local_path, map_location=map_location,
                                  weights_only=False)
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(
                    f'{filename} pickles objects from the module {err.name!r}, '
                    f'which is not installed: install it (for the authors\' '
                    f'ImageNet checkpoints: pip install yacs) to unpickle this '
                    f'trusted file.') from err
        try:
            if hasattr(torch.serialization, 'safe_globals'):  # torch >= 2.5
                with torch.serialization.safe_globals(mmengine_safe_globals()):
                    return torch.load(local_path, map_location=map_location,
                                      weights_only=True)
            return torch.load(local_path, map_location=map_location,
                              weights_only=True)
        except pickle.UnpicklingError as err:
            allowed = {g[1] if isinstance(g, tuple) else
                       f'{g.__module__}.{g.__qualname__}'
                       for g in mmengine_safe_globals()}
            found = [g for g in unsafe_globals(local_path, err) if g not in allowed]
            if not hasattr(torch.serialization, 'safe_globals'):
                found.append('(torch < 2.5 cannot allow even mmengine\'s own '
                             'types: upgrade torch to load training checkpoints safely)')
            hint = opt_in_hint or ('If you trust this file, load it with '
                                   'trusted=True.')
            raise UnsafeCheckpointError(
                f'Refused to load {filename}: it holds pickled Python objects '
                f'({", ".join(found) or "unknown types"}), and unpickling '
                f'them could run code from the file. Nothing from it was run. '
                f'{hint}') from None


_DEFAULT_HINT = ('If you trust this file, pass --trust-checkpoint to '
                 'tools/train.py or tools/test.py (or set trust_checkpoint = '
                 'True in the config).')


def load_from_safe_local(filename: str, map_location: Any = None) -> Any:
    return load_checkpoint_file(filename, map_location,
                                opt_in_hint=_DEFAULT_HINT)


def register_checkpoint_loader() -> None:
    """Make mmengine's ``CheckpointLoader`` (``load_from``, ``resume``,
    ``Pretrained`` init, ``tools/test.py``) read local files through
    :func:`load_checkpoint_file`: safe on any torch version, and able to read
    mmengine's own training checkpoints on torch >= 2.6."""
    CheckpointLoader.register_scheme(prefixes="", force=True)(load_from_safe_local)
