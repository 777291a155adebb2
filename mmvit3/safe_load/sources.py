# Copyright (c) mmvit3 authors. All rights reserved.
"""Every source of mmengine's ``CheckpointLoader`` through the safe loader:
local files, http(s) URLs (downloaded once into torch hub's folder, keyed by
the whole URL, with connect / read timeouts, then loaded safely) and the
names mmengine resolves to URLs (``torchvision://``, ``open-mmlab://``,
``mmcls://``...); weights that hold NaN / Inf are refused
(:func:`register_checkpoint_loader`)."""
import difflib
import hashlib
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from typing import Any, Callable, Optional
from urllib.parse import urlparse

import torch
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from ..errors import CheckpointDownloadError, ConfigError
from .files import check_finite_weights, load_checkpoint_file

#: Environment variable: seconds to wait for a download's connection and reads.
TIMEOUT_ENV_VAR = 'MMVIT3_DOWNLOAD_TIMEOUT'
DEFAULT_TIMEOUT = 60.


def _checked(checkpoint: Any, source: str) -> Any:
    check_finite_weights(checkpoint, source)
    return checkpoint


def load_from_safe_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local loader, loading safely (``''`` prefix)."""
    return _checked(load_checkpoint_file(filename, map_location), filename)


def cached_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where the file of ``url`` is kept: torch hub's checkpoint folder (as
    mmengine's http loader keeps it), under the last part of the URL's path
    (the authors' ``.../f/<id>/?dl=1`` links: ``<id>``) and a hash of the
    whole URL, so that two URLs never share a file."""
    from torch.hub import get_dir
    model_dir = model_dir or os.path.join(get_dir(), 'checkpoints')
    name = os.path.basename(urlparse(url).path.rstrip('/')) or 'checkpoint.pth'
    stem, ext = os.path.splitext(name)
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return os.path.join(model_dir, f'{stem}-{digest}{ext or ".pth"}')


def download_timeout() -> float:
    """Seconds to wait for a server to connect and for each read, from
    ``MMVIT3_DOWNLOAD_TIMEOUT`` (default 60).

    Raises:
        ConfigError: The variable is not a positive number.
    """
    text = os.environ.get(TIMEOUT_ENV_VAR, '').strip()
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.
    if not value > 0:
        raise ConfigError(f'{TIMEOUT_ENV_VAR} must be a positive number of seconds, '
                          f'got {text!r}')
    return value


def _fetch(url: str, path: str, timeout: float) -> None:
    """``url`` into ``path`` through a temporary file and a rename: a broken
    download leaves nothing behind."""
    print_log(f'Downloading {url} to {path}', logger='current')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.{os.getpid()}.part'
    try:
        request = urllib.request.Request(url, headers={'User-Agent': 'mmvit3'})
        with urllib.request.urlopen(request, timeout=timeout) as response, \
                open(tmp, 'wb') as f:
            shutil.copyfileobj(response, f, 1 << 20)
        os.replace(tmp, path)
    except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts
        reason = getattr(err, 'reason', None) or err
        if isinstance(err, urllib.error.HTTPError):
            reason = f'HTTP error {err.code} ({err.reason})'
        elif isinstance(reason, (socket.timeout, TimeoutError)):
            reason = (f'no answer within {timeout:g} s ({TIMEOUT_ENV_VAR} sets how long '
                      f'to wait)')
        raise CheckpointDownloadError(
            f'Could not download the checkpoint {url}: {reason}') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_checkpoint(url: str, model_dir: Optional[str] = None) -> str:
    """Download ``url`` (once: :func:`cached_path` is reused) without
    loading it; the local path. In a distributed run local rank 0 downloads
    first.

    Raises:
        CheckpointDownloadError: No connection, no answer within
            :func:`download_timeout`, or an HTTP error; the message names
            the URL.
    """
    path = cached_path(url, model_dir)
    timeout = download_timeout()

    def fetch() -> None:
        if not os.path.isfile(path):
            _fetch(url, path, timeout)

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


def safe_scheme_loader(filename: str) -> Callable:
    """The loader of :data:`SAFE_SCHEMES` for ``filename``, picked as mmengine's
    ``CheckpointLoader`` picks its own: the longest matching prefix (the
    local loader for plain paths)."""
    prefixes = sorted(((p, loader) for keys, loader in SAFE_SCHEMES.items()
                       for p in (keys if isinstance(keys, tuple) else (keys, ))),
                      key=lambda item: len(item[0]), reverse=True)
    return next(loader for prefix, loader in prefixes if re.match(prefix, filename))


def load_checkpoint_source(filename: str, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint from a path, a URL (downloaded once, with timeouts)
    or any name mmengine resolves, through the safe loader of its scheme
    (:func:`safe_scheme_loader`) whatever ``CheckpointLoader`` holds now;
    what it allows is the :func:`~.policy.load_policy` in force."""
    return safe_scheme_loader(filename)(filename, map_location)


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
