# Copyright (c) mmvit3 authors. All rights reserved.
"""Check that a config's data is on disk before a Runner is built.

Without this, a missing COCO / ADE20K folder surfaces deep inside dataset
construction (often in a dataloader worker) as a bare ``FileNotFoundError``.
:func:`check_data` walks the dataloader configs (``data_root`` +
``ann_file`` / ``data_prefix``, through dataset wrappers) and the
evaluators' ``ann_file``, and raises one :class:`DatasetNotFoundError` that
names every missing path, where the data comes from and how to run the
synthetic demo instead.
"""
import os
import os.path as osp
from typing import Any, Iterator, List, Sequence, Tuple

DEMO_HINT = (
    'To try mmvit3 without the real data, generate the small synthetic '
    'demo set (a few seconds) and train on it:\n'
    '    python tools/make_demo_data.py            # writes data/demo/\n'
    '    python tools/train.py configs/demo/mask_rcnn_vit3_demo.py   '
    '# detection\n'
    '    python tools/train.py configs/demo/upernet_vit3_demo.py     '
    '# segmentation')

COCO_HINT = (
    'COCO 2017 (https://cocodataset.org/#download: "2017 Train images", '
    '"2017 Val images", "2017 Train/Val annotations") is expected as\n'
    '    data/coco/annotations/instances_train2017.json\n'
    '    data/coco/annotations/instances_val2017.json\n'
    '    data/coco/train2017/*.jpg\n'
    '    data/coco/val2017/*.jpg\n'
    '(paths relative to the directory you run from; a symlink '
    '`ln -s /path/to/coco data/coco` works).')

ADE_HINT = (
    'ADE20K (SceneParsing, '
    'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip) '
    'is expected unzipped as\n'
    '    data/ade/ADEChallengeData2016/images/{training,validation}/*.jpg\n'
    '    data/ade/ADEChallengeData2016/annotations/{training,validation}/*.png\n'
    '(paths relative to the directory you run from; a symlink '
    '`ln -s /path/to/ADEChallengeData2016 data/ade/ADEChallengeData2016` '
    'works).')

DEMO_DATA_HINT = (
    'This config uses the synthetic demo data; write it with\n'
    '    python tools/make_demo_data.py --out {root}')


class DatasetNotFoundError(FileNotFoundError):
    """Data that a config points to is not on disk."""

    def __init__(self, message: str, missing: Sequence[Tuple[str, str]]):
        super().__init__(message)
        #: ``[(config key, path), ...]`` of what is missing.
        self.missing = list(missing)

    def __str__(self) -> str:
        return self.args[0]


def _get(cfg: Any, key: str, default=None):
    try:
        return cfg.get(key, default)
    except AttributeError:
        return default


def _leaf_datasets(dataset: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """Yield ``(config key, dataset cfg)`` of the datasets that read files,
    looking through wrappers (``dataset=`` / ``datasets=[...]``)."""
    if not hasattr(dataset, 'get'):
        return
    inner = _get(dataset, 'dataset')
    if inner is not None:
        yield from _leaf_datasets(inner, f'{key}.dataset')
        return
    inner = _get(dataset, 'datasets')
    if isinstance(inner, (list, tuple)):
        for i, d in enumerate(inner):
            yield from _leaf_datasets(d, f'{key}.datasets[{i}]')
        return
    yield key, dataset


def _is_local(path: str, backend_args: Any) -> bool:
    if '://' in path:
        return False
    backend = _get(backend_args, 'backend') if backend_args else None
    return backend in (None, 'local')


def _join(data_root: str, path: str) -> str:
    # as mmengine's BaseDataset._join_prefix
    if data_root and not osp.isabs(path):
        return osp.join(data_root, path)
    return path


def dataset_paths(cfg: Any,
                  splits: Sequence[str] = ('train', 'val', 'test')
                  ) -> List[Tuple[str, str]]:
    """The local paths a config's datasets and evaluators read, as
    ``[(config key, path), ...]``: each dataset's ``data_root``, its
    ``ann_file`` and ``data_prefix`` entries joined with ``data_root`` (as
    mmengine's ``BaseDataset`` does), and each evaluator's ``ann_file``.

    Args:
        cfg (Config | dict): A loaded config.
        splits (Sequence[str]): Which of ``train`` / ``val`` / ``test`` to
            walk (``{split}_dataloader`` and ``{split}_evaluator``).
    """
    paths: List[Tuple[str, str]] = []
    for split in splits:
        loader_key = f'{split}_dataloader'
        loader = _get(cfg, loader_key)
        if loader is not None:
            for key, ds in _leaf_datasets(_get(loader, 'dataset'),
                                          f'{loader_key}.dataset'):
                backend_args = _get(ds, 'backend_args')
                data_root = _get(ds, 'data_root') or ''
                if data_root and _is_local(data_root, backend_args):
                    paths.append((f'{key}.data_root', data_root))
                ann_file = _get(ds, 'ann_file') or ''
                if ann_file:
                    path = _join(data_root, ann_file)
                    if _is_local(path, backend_args):
                        paths.append((f'{key}.ann_file', path))
                prefix = _get(ds, 'data_prefix') or {}
                for name, value in (prefix.items()
                                    if hasattr(prefix, 'items') else []):
                    if not isinstance(value, str):
                        continue
                    path = _join(data_root, value)
                    if path and _is_local(path, backend_args):
                        paths.append((f'{key}.data_prefix.{name}', path))
        evaluators = _get(cfg, f'{split}_evaluator')
        if evaluators is None:
            continue
        if hasattr(evaluators, 'get') and 'metrics' in evaluators:
            evaluators = evaluators['metrics']
        if not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        for i, metric in enumerate(evaluators):
            ann_file = _get(metric, 'ann_file')
            if isinstance(ann_file, str) and ann_file and _is_local(
                    ann_file, _get(metric, 'backend_args')):
                key = f'{split}_evaluator'
                if len(evaluators) > 1:
                    key += f'[{i}]'
                paths.append((f'{key}.ann_file', ann_file))
    # each path once, in order
    seen, unique = set(), []
    for key, path in paths:
        if path not in seen:
            seen.add(path)
            unique.append((key, path))
    return unique


def _dataset_kind(cfg: Any) -> str:
    """'coco', 'ade' or '' from the dataset types and the default scope."""
    text = ' '.join(
        str(_get(ds, 'type', '')) for split in ('train', 'val', 'test')
        for _, ds in _leaf_datasets(
            _get(_get(cfg, f'{split}_dataloader', {}), 'dataset'), ''))
    if 'Coco' in text or 'LVIS' in text:
        return 'coco'
    if 'ADE' in text:
        return 'ade'
    scope = _get(cfg, 'default_scope')
    return {'mmdet': 'coco', 'mmseg': 'ade'}.get(scope, '')


def _demo_root(missing: Sequence[Tuple[str, str]]) -> str:
    """The demo data folder when the missing paths are the demo's."""
    for _, path in missing:
        parts = osp.normpath(path).split(os.sep)
        if 'demo' in parts:
            return os.sep.join(parts[:parts.index('demo') + 1]) or 'demo'
    return ''


def check_data(cfg: Any,
               splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Raise :class:`DatasetNotFoundError` if a path in
    :func:`dataset_paths` is missing; the message names each missing path
    (and the config key it comes from), how to get the data and how to run
    the demo instead. Remote paths (``s3://`` ..., non-local backends) are
    not checked."""
    missing = [(key, path) for key, path in dataset_paths(cfg, splits)
               if not osp.exists(path)]
    if not missing:
        return
    # a missing data_root explains everything below it
    roots = [path for key, path in missing if key.endswith('.data_root')]
    shown = [(key, path) for key, path in missing
             if key.endswith('.data_root') or not any(
                 osp.normpath(path).startswith(osp.normpath(r) + os.sep)
                 for r in roots)]
    lines = ['Dataset not found: these paths from the config do not exist:']
    for key, path in shown:
        where = '' if osp.isabs(path) else f'  (= {osp.abspath(path)})'
        lines.append(f'    {path}{where}   [{key}]')
    lines.append('')
    demo_root = _demo_root(missing)
    if demo_root:
        lines.append(DEMO_DATA_HINT.format(root=demo_root))
    else:
        kind = _dataset_kind(cfg)
        if kind == 'coco':
            lines.append(COCO_HINT)
        elif kind == 'ade':
            lines.append(ADE_HINT)
        else:
            lines.append('Download the dataset the config names, or point the '
                         'config at it.')
        lines.append('Elsewhere on disk: override the data root, e.g. '
                     '--cfg-options train_dataloader.dataset.data_root=PATH/ '
                     '(and the val/test dataloaders and evaluators likewise).')
        lines.append('')
        lines.append(DEMO_HINT)
    raise DatasetNotFoundError('\n'.join(lines), missing)
