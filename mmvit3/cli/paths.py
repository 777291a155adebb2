# Copyright (c) mmvit3 authors. All rights reserved.
"""Running the tools from any directory: relative data paths that are not
where the user runs from but are in the repository resolve against the
repository (:func:`resolve_against_repo`); ``--cfg-options data_root=PATH``
reaches every dataloader and evaluator (:func:`propagate_data_root`); and
the commands a message suggests are rewritten to work from the current
directory (:func:`commands_from_here`)."""
import logging
import os
import os.path as osp
import re
from typing import Any, Iterator, List, Optional, Tuple

from mmengine.logging import print_log

from ..datasets import split_datasets, split_metrics

SPLITS = ('train', 'val', 'test')


def repo_root() -> Optional[str]:
    """The checkout this package runs from (the folder holding ``mmvit3/``,
    ``configs/`` and ``tools/``), or None for an installed copy."""
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    if all(osp.isdir(osp.join(root, d)) for d in ('configs', 'tools')):
        return root
    return None


def _path_slots(cfg: Any) -> Iterator[Tuple[str, Any, str]]:
    """``(config key, dict, field)`` of every local path a run reads that a
    user sets: dataset ``data_root`` (else ``ann_file``), evaluator
    ``ann_file``, the backbone's ``init_cfg.checkpoint``, ``load_from``."""
    for split in SPLITS:
        for _, dataset in split_datasets(cfg, split):
            field = 'data_root' if dataset.get('data_root') else 'ann_file'
            yield f'{split}_dataloader.dataset.{field}', dataset, field
        for metric in split_metrics(cfg, split):
            yield f'{split}_evaluator.ann_file', metric, 'ann_file'
    init_cfg = (((cfg.get('model') or {}).get('backbone') or {}).get('init_cfg'))
    if hasattr(init_cfg, 'get'):
        yield 'model.backbone.init_cfg.checkpoint', init_cfg, 'checkpoint'
    if isinstance(cfg.get('load_from'), str):
        yield 'load_from', cfg, 'load_from'


def resolve_against_repo(cfg: Any, root: Optional[str] = None,
                         cwd: Optional[str] = None) -> List[str]:
    """Make the relative paths of :func:`_path_slots` that do not exist
    from ``cwd`` but do in the repository absolute, in place, so that the
    tools run from any directory; returns the changed config keys (logged).

    Args:
        cfg (Config): The config.
        root (str, optional): The repository. Defaults to :func:`repo_root`.
        cwd (str, optional): Defaults to the current directory.
    """
    root = root or repo_root()
    cwd = cwd or os.getcwd()
    if root is None or osp.realpath(cwd) == osp.realpath(root):
        return []
    changed = []
    for key, holder, field in _path_slots(cfg):
        path = holder.get(field)
        if not isinstance(path, str) or not path or osp.isabs(path) or \
                '://' in path or osp.exists(osp.join(cwd, path)):
            continue
        in_repo = osp.join(root, path)
        if osp.exists(in_repo):
            holder[field] = in_repo
            changed.append(key)
    if changed:
        print_log(
            f'Relative paths not found here resolved against the repository '
            f'{root}: {", ".join(sorted(set(changed)))}',
            logger='current', level=logging.INFO)
    return changed


def propagate_data_root(cfg: Any, old: str, new: str) -> int:
    """After ``--cfg-options data_root=NEW``: every dataset whose
    ``data_root`` is still the config's ``old`` one gets ``new``, and every
    evaluator ``ann_file`` under ``old`` moves under ``new``, in place (the
    config's ``data_root`` variable was copied into them when it was read);
    returns how many were changed.
    """
    count = 0
    old_norm = osp.normpath(old)
    for split in SPLITS:
        for _, dataset in split_datasets(cfg, split):
            root = dataset.get('data_root')
            if isinstance(root, str) and osp.normpath(root) == old_norm:
                dataset['data_root'] = new
                count += 1
        for metric in split_metrics(cfg, split):
            ann = metric.get('ann_file')
            if isinstance(ann, str) and osp.normpath(ann).startswith(
                    old_norm + os.sep):
                rest = osp.normpath(ann)[len(old_norm) + 1:]
                metric['ann_file'] = osp.join(new, rest)
                count += 1
    return count


def commands_from_here(text: str, root: Optional[str] = None,
                       cwd: Optional[str] = None) -> str:
    """``text`` with the repository-relative ``tools/...`` and
    ``configs/...`` of the commands it suggests made absolute when the
    current directory is not the repository."""
    root = root or repo_root()
    cwd = cwd or os.getcwd()
    if root is None or osp.realpath(cwd) == osp.realpath(root):
        return text
    return re.sub(r'(?<=\s)(tools|configs)/', lambda m: f'{root}/{m[1]}/',
                  text)
