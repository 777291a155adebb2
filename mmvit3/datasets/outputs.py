# Copyright (c) mmvit3 authors. All rights reserved.
"""What a tool's output must never replace: the images and labels of a
config's datasets (:func:`protected_paths`, :func:`refuse_dataset_outputs`)
and the files the run reads (:func:`same_file`: by device and inode, so a
hard link or a symlink to an input counts as the input)."""
import os
import os.path as osp
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from ..errors import OutputOverwritesInputError
from .check import dataset_paths

SPLITS = ('train', 'val', 'test')


def file_id(path: str) -> Optional[Tuple[int, int]]:
    """``(st_dev, st_ino)`` of ``path`` (symlinks followed), None if it
    does not exist."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def same_file(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one existing file or folder (a hard link,
    a symlink, another spelling of the path)."""
    id_a = file_id(a)
    return id_a is not None and id_a == file_id(b)


def _up(path: str) -> Iterator[str]:
    """``path`` (symlinks resolved) and each folder above it."""
    path = osp.realpath(path)
    while True:
        yield path
        parent = osp.dirname(path)
        if parent == path:
            return
        path = parent


def contains(outer: str, inner: str) -> bool:
    """Whether ``outer`` is ``inner`` or a folder above it (paths compared
    with symlinks resolved, existing ones by device and inode)."""
    outer_real, outer_id = osp.realpath(outer), file_id(outer)
    return any(p == outer_real or (outer_id is not None and file_id(p) == outer_id)
               for p in _up(inner))


def protected_paths(cfg: Any, splits: Sequence[str] = SPLITS) -> List[Tuple[str, str]]:
    """``[(config key, path)]`` of the images and labels of a config's
    datasets: each ``data_prefix`` folder (the ``data_root`` itself where a
    dataset has none) and each annotation file
    (:func:`~mmvit3.datasets.dataset_paths`)."""
    paths = dataset_paths(cfg, splits)
    with_prefix = {key.split('.data_prefix.')[0] for key, _ in paths if '.data_prefix.' in key}
    return [(key, path) for key, path in paths
            if not key.endswith('.data_root') or key[:-len('.data_root')] not in with_prefix]


def dataset_clash(target: str, cfg: Any) -> Optional[str]:
    """How the output ``target`` meets the images or labels of ``cfg``'s
    datasets (``'is'``, ``'holds'``, ``'lies inside'`` one of them, with its
    config key and path), or None."""
    for key, path in protected_paths(cfg):
        if same_file(target, path) or osp.realpath(target) == osp.realpath(path):
            how = 'is'
        elif contains(target, path):
            how = 'holds'
        elif contains(path, target):
            how = 'lies inside'
        else:
            continue
        return f'{how} {path} ({key} of the config)'
    return None


def refuse_dataset_outputs(cfg: Any, outputs: Sequence[Tuple[str, str]]) -> None:
    """Refuse outputs ``[(option, path)]`` that are, hold or lie inside a
    dataset's images or labels folder (or annotation file) of ``cfg``.

    Raises:
        OutputOverwritesInputError: One does; the message names both paths
            and ``--overwrite``.
    """
    for option, path in outputs:
        clash = dataset_clash(path, cfg) if path else None
        if clash:
            raise OutputOverwritesInputError(
                f'{option} {path} {clash}: writing there could replace the dataset\'s '
                f'images or labels. Choose another path, or pass --overwrite to write '
                f'there anyway.')
