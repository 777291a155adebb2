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

A file that is empty, cut short, damaged or no checkpoint at all is a
:class:`CorruptCheckpointError` naming it (never a refusal that suggests the
opt-in). ``import mmvit3`` makes every scheme of mmengine's
``CheckpointLoader`` (local files, http(s) and the names mmengine resolves to
URLs) read through :func:`load_checkpoint_file`, and refuse weights that hold
NaN / Inf (:func:`register_checkpoint_loader`).
"""
import contextvars
import dataclasses
import difflib
import inspect
import logging
import os
import pickle
import re
import struct
import zipfile
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_local_path
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader

from .errors import (CheckpointDownloadError, CheckpointModuleError, CheckpointNotFoundError,
                     CorruptCheckpointError, NonFiniteCheckpointError, UnsafeCheckpointError)


@dataclasses.dataclass(frozen=True)
class LoadPolicy:
    """How the checkpoints loaded now are treated.

    mmengine's ``CheckpointLoader`` calls a scheme's loader with the file
    name and ``map_location`` only, so what a run opted into reaches the
    loader through this one context variable, set for a block by
    :func:`trust_checkpoints`, :func:`allow_nonfinite_weights` and
    :func:`set_opt_in_hint`.

    Attributes:
        trusted (bool): Unpickle every file in full.
        allow_nonfinite (bool): Load weights that hold NaN / Inf.
        opt_in_hint (str, optional): How the user in front of the tool in
            use opts in, for refusals; None: the default sentence.
    """
    trusted: bool = False
    allow_nonfinite: bool = False
    opt_in_hint: Optional[str] = None


_POLICY: contextvars.ContextVar = contextvars.ContextVar('mmvit3_load_policy',
                                                         default=LoadPolicy())


def load_policy() -> LoadPolicy:
    """The policy in force now."""
    return _POLICY.get()


class _PolicyChange:
    """Changes the policy when made; as a context manager, only for the
    block (the previous policy comes back on exit)."""

    def __init__(self, **changes) -> None:
        self._previous = _POLICY.get()
        _POLICY.set(dataclasses.replace(self._previous, **changes))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        _POLICY.set(self._previous)


class trust_checkpoints(_PolicyChange):  # noqa: N801  (used like a function)
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
        super().__init__(trusted=bool(enabled))


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


def unsafe_globals(filename: str, error: Optional[BaseException] = None) -> List[str]:
    """The classes and functions a checkpoint file would import when
    unpickled (read without unpickling)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(filename))
    except Exception:  # older torch or an unreadable archive: parse the error
        return re.findall(r'GLOBAL ([\w.]+)', str(error or ''))


_ZIP_LOCAL = b'PK\x03\x04'
_PICKLE_PROTO = 0x80


def file_problem(path: str) -> Optional[str]:
    """Why the local file ``path`` cannot be a PyTorch checkpoint, from its
    bytes alone (None when it looks like one): empty, a zip archive cut
    short, or the leading bytes of something else (HTML, JSON, text...)."""
    size = os.path.getsize(path)
    if size == 0:
        return 'is empty (0 bytes): an interrupted download or save'
    with open(path, 'rb') as f:
        head = f.read(64)
    if head.startswith(_ZIP_LOCAL):
        if not zipfile.is_zipfile(path):
            return (f'is incomplete: a zip archive (the format of torch.save) '
                    f'cut short at {size} bytes, without its closing directory '
                    f'(an interrupted download, copy or save)')
        return None
    if head[0] == _PICKLE_PROTO:
        return None  # the legacy (torch < 1.6) format: let torch read it
    text = head.lstrip().lower()
    if text.startswith((b'<!doctype', b'<html', b'<?xml')):
        kind = 'an HTML/XML page (a web server\'s error or login page?)'
    elif text.startswith((b'{', b'[')):
        kind = 'JSON or other text'
    elif head[:8].isascii() and all(32 <= c < 127 or c in b'\t\r\n' for c in head[:32]):
        kind = 'text'
    else:
        kind = f'unknown data (first bytes {head[:8].hex(" ")})'
    return (f'is not a PyTorch checkpoint: it holds {kind}, neither the zip '
            f'archive of torch.save nor a pickle')


def _corrupt(source: str, local_path: str, problem: str) -> CorruptCheckpointError:
    where = (f'{source} (downloaded to {local_path}; delete that file to '
             f'download it again)' if source != local_path and '://' in source
             else source)
    return CorruptCheckpointError(
        f'Checkpoint {where} {problem}. Get the file again (or use another '
        f'checkpoint).', path=local_path, source=source)


def _torch_load(local_path: str, source: str, **kwargs) -> Any:
    """``torch.load`` that names the file when its bytes are damaged."""
    problem = file_problem(local_path)
    if problem is not None:
        raise _corrupt(source, local_path, problem)
    try:
        return torch.load(local_path, **kwargs)
    except pickle.UnpicklingError:
        raise
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile,
            KeyError, IndexError, struct.error) as err:
        raise _corrupt(source, local_path,
                       f'is corrupt or incomplete ({type(err).__name__}: '
                       f'{str(err).splitlines()[0] if str(err) else err!r})') from None


def load_checkpoint_file(filename: str,
                         map_location: Any = 'cpu',
                         trusted: bool = False,
                         opt_in_hint: Optional[str] = None,
                         source: Optional[str] = None) -> Any:
    """Load a checkpoint file (a path or any URI mmengine's file backends
    read), refusing pickled Python objects unless ``trusted``.

    Args:
        filename (str): Path or URI of the file.
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
        trusted (bool): Unpickle everything (can run code from the file):
            only for files you trust. Defaults to False.
        opt_in_hint (str, optional): How the caller's user opts in, for the
            error message. Defaults to the sentence for the tool in use
            (:func:`set_opt_in_hint`).
        source (str, optional): Where the file came from (a URL), for the
            messages. Defaults to ``filename``.

    Raises:
        FileNotFoundError: No such file.
        CorruptCheckpointError: The file is empty, cut short, damaged or no
            checkpoint.
        UnsafeCheckpointError: The file pickles objects and ``trusted`` is off.
    """
    if '://' not in filename:
        filename = os.path.expanduser(filename)
    if '://' not in filename and not os.path.isfile(filename):
        if os.path.isdir(filename):
            raise CheckpointNotFoundError(
                f'Checkpoint {filename!r} is a directory, not a checkpoint file')
        raise CheckpointNotFoundError(f'Checkpoint file not found: {filename!r}')
    source = source or filename
    with get_local_path(filename) as local_path:
        if trusted or _POLICY.get().trusted:
            print_log(
                f'Loading {source} with full unpickling (trusted): only do '
                f'this for files you trust.', logger='current',
                level=logging.WARNING)
            try:
                return _torch_load(local_path, source, map_location=map_location,
                                   weights_only=False)
            except ModuleNotFoundError as err:
                raise CheckpointModuleError(
                    f'{source} pickles objects from the module {err.name!r}, '
                    f'which is not installed: install it (for the authors\' '
                    f'ImageNet checkpoints: pip install yacs) to unpickle this '
                    f'trusted file.') from err
            except pickle.UnpicklingError as err:
                raise _corrupt(source, local_path,
                               f'is corrupt or no checkpoint ({err})') from None
        try:
            if hasattr(torch.serialization, 'safe_globals'):  # torch >= 2.5
                with torch.serialization.safe_globals(mmengine_safe_globals()):
                    return _torch_load(local_path, source,
                                       map_location=map_location,
                                       weights_only=True)
            return _torch_load(local_path, source, map_location=map_location,
                               weights_only=True)
        except UnsafeCheckpointError:
            raise
        except pickle.UnpicklingError as err:
            allowed = {g[1] if isinstance(g, tuple) else
                       f'{g.__module__}.{g.__qualname__}'
                       for g in mmengine_safe_globals()}
            found = [g for g in unsafe_globals(local_path, err) if g not in allowed]
            if not found:  # no objects named: damaged bytes, not a refusal
                found = re.search(r'Unpickler error:\s*(\S[^\n]*)', str(err))
                detail = f': {found.group(1)}' if found else ''
                raise _corrupt(source, local_path,
                               f'is corrupt or incomplete (its pickled data '
                               f'cannot be read{detail})') from None
            if not hasattr(torch.serialization, 'safe_globals'):
                found.append('(torch < 2.5 cannot allow even mmengine\'s own '
                             'types: upgrade torch to load training checkpoints safely)')
            hint = opt_in_hint or opt_in_sentence()
            raise UnsafeCheckpointError(
                f'Refused to load {source}: it holds pickled Python objects '
                f'({", ".join(found)}), and unpickling '
                f'them could run code from the file. Nothing from it was run. '
                f'{hint}') from None


# --------------------------------------------------------------------------
# the opt-in sentence of the tool in use

#: The opt-in of the project's tools/train.py and tools/test.py.
TOOLS_HINT = ('If you trust this file, pass --trust-checkpoint to '
              'tools/train.py or tools/test.py (or set trust_checkpoint = '
              'True in the config).')
_DEFAULT_HINT = ('If you trust this file, pass --trust-checkpoint to mmvit3\'s '
                 'tools/train.py or tools/test.py; with other tools, set '
                 'trust_checkpoint = True in a config whose custom_hooks have '
                 'mmvit3\'s CheckpointSafetyHook (configs inheriting '
                 'configs/_base_/mmvit3_runtime.py do).')
CONFIG_HINT = ('If you trust this file, set trust_checkpoint = True in the '
               'config (e.g. --cfg-options trust_checkpoint=True; it takes '
               'effect through mmvit3\'s CheckpointSafetyHook, which '
               'configs/_base_/mmvit3_runtime.py adds to custom_hooks).')


class set_opt_in_hint(_PolicyChange):  # noqa: N801  (used like a function)
    """Make refusals name ``hint`` as the way to opt in (None: the default
    sentence, which names the project's tools); as a context manager only
    for the block."""

    def __init__(self, hint: Optional[str]) -> None:
        super().__init__(opt_in_hint=hint)


def opt_in_hint_set() -> bool:
    """Whether a tool or hook has set the opt-in sentence."""
    return _POLICY.get().opt_in_hint is not None


def opt_in_sentence() -> str:
    """The opt-in sentence refusals carry now."""
    return _POLICY.get().opt_in_hint or _DEFAULT_HINT


# --------------------------------------------------------------------------
# non-finite weights

NONFINITE_OPT_OUT = ('allow_nonfinite_weights = True in the config (e.g. '
                     '--cfg-options allow_nonfinite_weights=True)')


class allow_nonfinite_weights(_PolicyChange):  # noqa: N801  (used like a function)
    """Load checkpoints with NaN / Inf weights without an error (the
    checkpoint check :func:`check_finite_weights` is off); as a context
    manager only for the block, like :class:`trust_checkpoints`."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(allow_nonfinite=bool(enabled))


def nonfinite_tensors(state: Any, limit: int = 8) -> Tuple[List[str], int]:
    """The names of (up to ``limit``) floating-point tensors of a state dict
    that hold NaN or Inf, with the count of their bad values; and how many
    such tensors there are."""
    bad: List[str] = []
    count = 0
    for name, value in (state.items() if hasattr(state, 'items') else []):
        if isinstance(value, torch.Tensor) and value.is_floating_point() \
                and value.numel() and not bool(torch.isfinite(value).all()):
            count += 1
            if len(bad) < limit:
                n_nan = int(torch.isnan(value).sum())
                n_inf = int(torch.isinf(value).sum())
                bad.append(f'{name} ({n_nan} NaN, {n_inf} Inf of {value.numel()})')
    return bad, count


def check_finite_weights(checkpoint: Any, source: str) -> None:
    """Raise :class:`NonFiniteCheckpointError` naming the weights of
    ``checkpoint`` (its ``state_dict`` / ``model`` / ``state_dict_ema``
    entry, or the checkpoint itself) that hold NaN or Inf, unless
    :func:`allow_nonfinite_weights` is on."""
    if _POLICY.get().allow_nonfinite or not isinstance(checkpoint, dict):
        return
    states = [checkpoint[k] for k in ('state_dict', 'model', 'state_dict_ema')
              if isinstance(checkpoint.get(k), dict)] or [checkpoint]
    for state in states:
        bad, count = nonfinite_tensors(state)
        if count:
            more = f' ... and {count - len(bad)} more' if count > len(bad) else ''
            raise NonFiniteCheckpointError(
                f'Checkpoint {source} holds non-finite weights in {count} '
                f'tensors: {", ".join(bad)}{more}. It comes from a run that '
                f'diverged: use an earlier checkpoint of that run. To load it '
                f'anyway, set {NONFINITE_OPT_OUT}.')


# --------------------------------------------------------------------------
# mmengine's CheckpointLoader: every scheme through the safe loader


def _checked(checkpoint: Any, source: str) -> Any:
    check_finite_weights(checkpoint, source)
    return checkpoint


def load_from_safe_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local loader, loading safely (``''`` prefix)."""
    return _checked(load_checkpoint_file(filename, map_location), filename)


def download_checkpoint(url: str, model_dir: Optional[str] = None) -> str:
    """Download ``url`` into torch hub's checkpoint folder (as mmengine's
    http loader does: a file already there is reused) without loading it;
    the local path. In a distributed run local rank 0 downloads first."""
    from torch.hub import download_url_to_file, get_dir
    from urllib.parse import urlparse
    model_dir = model_dir or os.path.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    name = os.path.basename(urlparse(url).path) or 'checkpoint.pth'
    path = os.path.join(model_dir, name)

    def fetch() -> None:
        if not os.path.isfile(path):
            print_log(f'Downloading {url} to {path}', logger='current')
            try:
                download_url_to_file(url, path, progress=False)
            except OSError as err:  # URLError / HTTPError are OSErrors
                raise CheckpointDownloadError(
                    f'Could not download the checkpoint {url}: {err}') from None

    rank, world_size = get_dist_info()
    if rank == 0:
        fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            fetch()
    return path


def load_from_safe_http(filename: str, map_location: Any = None,
                        model_dir: Optional[str] = None) -> Any:
    """mmengine's http(s) loader (``torch.hub``, which unpickles everything),
    downloading the file and loading it safely; messages name the URL."""
    local = download_checkpoint(filename, model_dir)
    return _checked(load_checkpoint_file(local, map_location, source=filename),
                    filename)


def _resolve(name: str, table: dict, scheme: str) -> str:
    if name not in table:
        raise KeyError(f'{scheme}{name}: no such model name in mmengine\'s '
                       f'{scheme} table (close names: '
                       f'{difflib.get_close_matches(name, list(table))})')
    return table[name]


def load_from_safe_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` / ``modelzoo://NAME``: the URL mmengine's table
    gives, loaded safely."""
    from mmengine.runner import checkpoint as ckpt
    scheme = 'modelzoo://' if filename.startswith('modelzoo://') else 'torchvision://'
    url = _resolve(filename[len(scheme):], ckpt.get_torchvision_models(), scheme)
    print_log(f'{filename} is {url}', logger='current')
    return load_from_safe_http(url, map_location)


def load_from_safe_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: the URL (or file under
    mmengine's home) mmengine's table gives, loaded safely."""
    from mmengine.runner import checkpoint as ckpt
    scheme = 'open-mmlab://' if filename.startswith('open-mmlab://') else 'openmmlab://'
    name = filename[len(scheme):]
    name = ckpt.get_deprecated_model_names().get(name, name)
    url = _resolve(name, ckpt.get_external_models(), scheme)
    print_log(f'{filename} is {url}', logger='current')
    if url.startswith(('http://', 'https://')):
        return load_from_safe_http(url, map_location)
    local = os.path.join(ckpt._get_mmengine_home(), url)
    return _checked(load_checkpoint_file(local, map_location, source=filename),
                    filename)


def load_from_safe_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME``: the URL mmengine's table gives, loaded safely."""
    from mmengine.runner import checkpoint as ckpt
    url = _resolve(filename[len('mmcls://'):], ckpt.get_mmcls_models(), 'mmcls://')
    return ckpt._process_mmcls_checkpoint(load_from_safe_http(url, map_location))


def load_from_safe_remote(filename: str, map_location: Any = None) -> Any:
    """``s3://`` / ``petrel://`` (and ``pavi://``): fetched into a temporary
    file through mmengine's file backends, loaded safely."""
    import tempfile
    if filename.startswith('pavi://'):
        try:
            from pavi import modelcloud
        except ImportError:
            raise ImportError(
                'Please install pavi to load checkpoint from modelcloud.')
        model = modelcloud.get(filename[len('pavi://'):])
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, model.name)
            model.download(local)
            return _checked(load_checkpoint_file(local, map_location,
                                                 source=filename), filename)
    from mmengine.fileio import get_file_backend
    backend = get_file_backend(filename, backend_args={'backend': 'petrel'})
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, 'checkpoint.pth')
        with open(local, 'wb') as f:
            f.write(backend.get(filename))
        return _checked(load_checkpoint_file(local, map_location,
                                             source=filename), filename)


#: mmengine's CheckpointLoader prefixes -> the safe loader that replaces its own.
SAFE_SCHEMES = {
    '': load_from_safe_local,
    ('http://', 'https://'): load_from_safe_http,
    ('modelzoo://', 'torchvision://'): load_from_safe_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_safe_openmmlab,
    'mmcls://': load_from_safe_mmcls,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://', 'pavi://'): load_from_safe_remote,
}


def register_checkpoint_loader() -> None:
    """Make every scheme of mmengine's ``CheckpointLoader`` (``load_from``,
    ``resume``, ``Pretrained`` init, ``tools/test.py``) load through
    :func:`load_checkpoint_file`: local files, http(s) URLs (downloaded,
    then loaded safely) and the names mmengine resolves to URLs
    (``torchvision://``, ``open-mmlab://``, ``mmcls://``...), so no source
    runs code from a file by default. Loaded weights that hold NaN / Inf
    are refused (:func:`check_finite_weights`)."""
    for prefixes, loader in SAFE_SCHEMES.items():
        CheckpointLoader.register_scheme(
            prefixes=list(prefixes) if isinstance(prefixes, tuple) else prefixes,
            loader=loader, force=True)
