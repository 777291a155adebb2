# Copyright (c) mmvit3 authors. All rights reserved.
"""Loading a checkpoint file without running code from it.

``torch.load(weights_only=True)`` unpickles tensors, containers and a short
list of plain types only: a file that pickles any other Python object (a
config object, say, or something crafted to run a command) is refused before
any of its code runs. On top of that list, exactly the types that mmengine
and numpy put in mmengine's own training checkpoints are allowed
(:func:`mmengine_safe_globals`), so training checkpoints load for testing,
``load_from`` and ``resume`` with safety on, and so is the yacs config of the
authors' ImageNet checkpoints, by its name, without yacs (:mod:`.authors`). A config stored in a checkpoint
as text (mmengine's ``meta['config']``, which its ``resume`` and the
inferencers read by running it) must be values only
(:func:`stored_config_problem`). Opting in for a file you trust
(``trusted=True``, or :class:`~.policy.trust_checkpoints`) is explicit and
logged.

A file that is empty, cut short, damaged (a record failing its CRC-32) or no
checkpoint at all is a :class:`~mmvit3.errors.CorruptCheckpointError` naming
it, never a refusal that suggests the opt-in.
"""
import ast
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
from mmengine.fileio import get_local_path
from mmengine.logging import HistoryBuffer, print_log

from ..errors import (CheckpointModuleError, CheckpointNotFoundError, CorruptCheckpointError,
                      NonFiniteCheckpointError, UnsafeCheckpointError)
from .authors import authors_safe_globals
from .policy import NONFINITE_OPT_OUT, load_policy

_MODULE_NAME = re.compile(r'^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$')

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


def safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """Every type a safe load allows beyond torch's own list: mmengine's
    (:func:`mmengine_safe_globals`) and the authors' (:func:`authors_safe_globals`)."""
    return mmengine_safe_globals() + authors_safe_globals()


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
    short or whose records fail their CRC-32, or the leading bytes of
    something else (HTML, JSON, text...)."""
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
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()  # every record against its CRC-32
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            return f'is a damaged zip archive ({err})'
        if damaged is not None:
            return (f'is damaged: its record {damaged} fails its CRC-32 check (bytes '
                    f'changed since torch.save wrote it: a bad copy, disk or download)')
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
            KeyError, IndexError, struct.error, MemoryError, OverflowError) as err:
        raise _corrupt(source, local_path,
                       f'is corrupt or incomplete ({type(err).__name__}: '
                       f'{str(err).splitlines()[0] if str(err) else err!r})') from None


def _safe_torch_load(local_path: str, source: str, map_location: Any,
                     opt_in_hint: Optional[str]) -> Any:
    """``torch.load(weights_only=True)`` with :func:`safe_globals` allowed;
    a refusal names the objects of the file and the opt-in."""
    try:
        if hasattr(torch.serialization, 'safe_globals'):  # torch >= 2.5
            with torch.serialization.safe_globals(safe_globals()):
                return _torch_load(local_path, source, map_location=map_location,
                                   weights_only=True)
        return _torch_load(local_path, source, map_location=map_location, weights_only=True)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as err:
        allowed = {g[1] if isinstance(g, tuple) else
                   f'{g.__module__}.{g.__qualname__}'
                   for g in safe_globals()}
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
        hint = opt_in_hint or load_policy().opt_in_sentence
        raise UnsafeCheckpointError(
            f'Refused to load {source}: it holds pickled Python objects '
            f'({", ".join(found)}), and unpickling '
            f'them could run code from the file. Nothing from it was run. '
            f'{hint}') from None


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
        if trusted or load_policy().trusted:
            print_log(
                f'Loading {source} with full unpickling (trusted): only do '
                f'this for files you trust.', logger='current',
                level=logging.WARNING)
            try:
                return _torch_load(local_path, source, map_location=map_location,
                                   weights_only=False)
            except ModuleNotFoundError as err:
                try:  # the safe load may read it without that module (a yacs config)
                    return _safe_torch_load(local_path, source, map_location, opt_in_hint)
                except UnsafeCheckpointError:
                    raise CheckpointModuleError(
                        f'{source} pickles objects from the module {err.name!r}, '
                        f'which is not installed: install it to unpickle this '
                        f'trusted file.') from err
            except pickle.UnpicklingError as err:
                raise _corrupt(source, local_path,
                               f'is corrupt or no checkpoint ({err})') from None
        loaded = _safe_torch_load(local_path, source, map_location, opt_in_hint)
    check_stored_config(loaded, source, opt_in_hint)
    return loaded


def _first_code(node: ast.AST) -> Optional[ast.AST]:
    """The first part of an expression that is more than a value: anything
    but numbers, strings, ``True`` / ``False`` / ``None``, signs, lists,
    tuples, sets, dicts and ``dict(key=value, ...)``."""
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.keyword,
                            ast.expr_context, ast.USub, ast.UAdd)):
            continue
        if isinstance(sub, ast.UnaryOp) and isinstance(sub.op, (ast.USub, ast.UAdd)):
            continue
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and \
                sub.func.id == 'dict' and not sub.args:
            continue
        if isinstance(sub, ast.Name) and sub.id == 'dict':
            continue
        return sub
    return None


def stored_config_problem(text: str) -> Optional[str]:
    """Why a config stored in a checkpoint as Python text is more than data,
    or None: it must be assignments of values only (:func:`_first_code`), with
    no ``_base_`` (which would read and run other files); ``custom_imports``
    may name installed modules (as any config names registered types), by
    their dotted names only."""
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        return f'it is not a Python config (line {err.lineno}: {err.msg})'
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            return f'line {stmt.lineno} is a {type(stmt).__name__}, not a value assignment'
        name = stmt.targets[0].id
        code = _first_code(stmt.value)
        if code is not None:
            return (f'line {code.lineno} ({name} = ...) holds {type(code).__name__} code: '
                    f'{ast.get_source_segment(text, code) or ""!s:.60}')
        if name == '_base_':
            return f'line {stmt.lineno} names _base_ files, which would be read'
        if name == 'custom_imports':
            value = ast.literal_eval(stmt.value) if not isinstance(stmt.value, ast.Call) else \
                {k.arg: ast.literal_eval(k.value) for k in stmt.value.keywords}
            imports = value.get('imports', []) if isinstance(value, dict) else value
            imports = [imports] if isinstance(imports, str) else imports
            if not isinstance(imports, (list, tuple)) or not all(
                    isinstance(m, str) and _MODULE_NAME.match(m) for m in imports):
                return f'line {stmt.lineno} imports {imports!r}, which are no module names'
    return None


#: Where mmengine keeps a checkpoint's config as text, and who reads it by
#: running it: the inferencers (``message_hub.runtime_info.cfg``, else
#: ``meta.cfg``) and ``Runner.resume`` (``meta.config``).
STORED_CONFIGS = (('message_hub', 'runtime_info', 'cfg'), ('meta', 'cfg'), ('meta', 'config'))


def check_stored_config(checkpoint: Any, source: str,
                        opt_in_hint: Optional[str] = None) -> None:
    """Refuse a checkpoint whose config stored as text (any place of
    :data:`STORED_CONFIGS`) holds code (:func:`stored_config_problem`):
    mmengine runs that text to read it. Nothing of it is run here.

    Raises:
        UnsafeCheckpointError: Naming the file, the entry and the first line
            of code.
    """
    for place in STORED_CONFIGS:
        text = checkpoint
        for key in place:
            text = text.get(key) if isinstance(text, dict) else None
        problem = stored_config_problem(text) if isinstance(text, str) else None
        if problem is not None:
            hint = opt_in_hint or load_policy().opt_in_sentence
            raise UnsafeCheckpointError(
                f'Refused to load {source}: the config stored in it ({".".join(place)}) is '
                f'code, not only values: {problem}. mmengine runs that text when it resumes '
                f'or builds an inferencer from the checkpoint; nothing from it was run. {hint}')


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
    if load_policy().allow_nonfinite or not isinstance(checkpoint, dict):
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
