# Copyright (c) mmvit3 authors. All rights reserved.
"""Checks of a config's data before a Runner is built.

* On disk (:func:`check_data`): without it, a missing COCO / ADE20K folder
  surfaces deep inside dataset construction (often in a dataloader worker)
  as a bare ``FileNotFoundError``. It walks the dataloader configs
  (``data_root`` + ``ann_file`` / ``data_prefix``, through dataset
  wrappers) and the evaluators' ``ann_file``, and raises one
  :class:`~mmvit3.errors.DatasetNotFoundError` that names every missing
  path, where the data comes from and how to run the synthetic demo instead.
* Usable (:func:`check_annotations`): COCO files and segmentation label
  maps that are there but cannot be trained or evaluated on
  (:class:`~mmvit3.errors.BadAnnotationError`).
"""
import copy
import importlib
import json
import logging
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.logging import print_log

from ..errors import BadAnnotationError, DatasetNotFoundError
from .walk import split_datasets, split_metrics

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


def _get(cfg: Any, key: str, default=None):
    try:
        return cfg.get(key, default)
    except AttributeError:
        return default


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
        for key, ds in split_datasets(cfg, split):
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
            for name, value in (prefix.items() if hasattr(prefix, 'items') else []):
                if not isinstance(value, str):
                    continue
                path = _join(data_root, value)
                if path and _is_local(path, backend_args):
                    paths.append((f'{key}.data_prefix.{name}', path))
        metrics = split_metrics(cfg, split)
        for i, metric in enumerate(metrics):
            ann_file = _get(metric, 'ann_file')
            if isinstance(ann_file, str) and ann_file and _is_local(
                    ann_file, _get(metric, 'backend_args')):
                key = f'{split}_evaluator'
                if len(metrics) > 1:
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
    text = ' '.join(str(_get(ds, 'type', '')) for split in ('train', 'val', 'test')
                    for _, ds in split_datasets(cfg, split))
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


# --------------------------------------------------------------------------
# annotations: files that are there but cannot be used


def _examples(items: Sequence[str], limit: int = 3) -> str:
    more = f', ... ({len(items) - limit} more)' if len(items) > limit else ''
    return ', '.join(items[:limit]) + more


def check_coco_file(path: str, classes: Optional[Sequence[str]] = None,
                    filter_cfg: Optional[dict] = None) -> List[str]:
    """Check a COCO-style annotation file before a dataset reads it.

    Errors (:class:`BadAnnotationError`, naming ``path``): the file is
    empty, not JSON, not a COCO dict (no ``images`` / ``annotations`` /
    ``categories``), holds no images, none of its categories is one of the
    config's ``classes``, or (with ``filter_cfg.filter_empty_gt``, as in
    training) no image keeps a usable annotation. Counted warnings (the
    returned lines): boxes of zero or negative size, polygons of fewer than
    3 points, category ids that are not in ``categories`` or not among
    ``classes``, annotations of unknown images; the libraries drop these
    annotations silently.
    """
    if osp.getsize(path) == 0:
        raise BadAnnotationError(f'Annotation file {path} is empty (0 bytes): '
                                 f'an interrupted download or copy?')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadAnnotationError(f'Annotation file {path} is not valid JSON '
                                 f'({err}): a truncated or wrong file?') from None
    if not isinstance(data, dict):
        raise BadAnnotationError(
            f'Annotation file {path} holds a JSON {type(data).__name__}, not '
            f'a COCO dict with "images", "annotations" and "categories"')
    missing = [k for k in ('images', 'annotations', 'categories')
               if not isinstance(data.get(k), list)]
    if missing:
        raise BadAnnotationError(
            f'Annotation file {path} is not in COCO format: it has no list '
            f'{", ".join(repr(k) for k in missing)} (its keys: '
            f'{sorted(map(str, data))})')
    images = {img.get('id'): img for img in data['images'] if isinstance(img, dict)}
    if not images:
        raise BadAnnotationError(f'Annotation file {path} lists no images')
    cats = {c.get('id'): c.get('name') for c in data['categories']
            if isinstance(c, dict)}
    wanted = set(cats)
    if classes:
        wanted = {i for i, name in cats.items() if name in set(classes)}
        if not wanted:
            raise BadAnnotationError(
                f'Annotation file {path}: none of its categories '
                f'({_examples(sorted(map(str, cats.values())), 8)}) is one of '
                f'the config\'s classes ({", ".join(classes)}): every '
                f'annotation would be dropped. Set metainfo.classes to the '
                f'file\'s category names.')
    bad: Dict[str, List[str]] = {}
    usable = set()
    for ann in data['annotations']:
        if not isinstance(ann, dict):
            bad.setdefault('entries that are no dict', []).append(repr(ann)[:40])
            continue
        aid = f'annotation {ann.get("id")} (image {ann.get("image_id")})'
        if ann.get('image_id') not in images:
            bad.setdefault('annotations of an image id not in "images"', []).append(aid)
            continue
        if ann.get('category_id') not in cats:
            bad.setdefault('unknown category ids', []).append(
                f'{aid}: category_id {ann.get("category_id")}')
            continue
        if ann.get('category_id') not in wanted:
            bad.setdefault('categories not among the config\'s classes', []).append(
                f'{aid}: {cats[ann["category_id"]]}')
            continue
        box = ann.get('bbox')
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and
                all(isinstance(v, (int, float)) for v in box)):
            bad.setdefault('boxes that are not [x, y, w, h]', []).append(
                f'{aid}: {box!r}')
            continue
        if box[2] < 1 or box[3] < 1:
            bad.setdefault('boxes of zero or negative size', []).append(
                f'{aid}: w={box[2]}, h={box[3]}')
            continue
        seg = ann.get('segmentation')
        if isinstance(seg, list):
            short = [p for p in seg if not isinstance(p, list) or len(p) < 6
                     or len(p) % 2]
            if short:
                bad.setdefault('polygons of fewer than 3 points', []).append(
                    f'{aid}: {len(short)} of {len(seg)} polygons')
                if len(short) == len(seg):
                    continue
        if not ann.get('iscrowd', 0):
            usable.add(ann['image_id'])
    filter_cfg = filter_cfg or {}
    if filter_cfg.get('filter_empty_gt', False):
        min_size = filter_cfg.get('min_size', 0) or 0
        kept = [i for i in usable if min(images[i].get('width', min_size),
                                         images[i].get('height', min_size)) >= min_size]
        if not kept:
            raise BadAnnotationError(
                f'Annotation file {path}: no image keeps a usable annotation '
                f'(filter_cfg={dict(filter_cfg)} drops images without one), so '
                f'the dataset would be empty.' +
                (' Problems found: ' + '; '.join(
                    f'{len(v)} {k}' for k, v in bad.items()) if bad else ''))
    return [f'{path}: {len(items)} {what} (dropped): {_examples(items)}'
            for what, items in bad.items()]


def check_seg_labels(pairs: Sequence[Tuple[str, str]], num_classes: int,
                     reduce_zero_label: bool = False, ignore_index: int = 255,
                     max_decoded: int = 500, min_side: int = 32) -> None:
    """Check segmentation label maps against their images before training.

    For every ``(image, label map)`` pair, from the file headers: the label
    map must exist, have its image's size, and be one channel (a colour
    label is refused: labels are class indices). For up to ``max_decoded``
    label maps, spread over the set, the values must be class indices:
    ``0 .. num_classes - 1`` (``0 .. num_classes`` with
    ``reduce_zero_label``) or ``ignore_index``. Images smaller than
    ``min_side`` pixels a side are refused too.

    Raises:
        BadAnnotationError: Naming the first files of each problem.
    """
    from PIL import Image
    problems: Dict[str, List[str]] = {}
    step = max(1, len(pairs) // max_decoded) if max_decoded else 0
    top = num_classes if reduce_zero_label else num_classes - 1
    for i, (img_path, seg_path) in enumerate(pairs):
        if not osp.isfile(seg_path):
            problems.setdefault('label maps missing', []).append(seg_path)
            continue
        try:
            with Image.open(img_path) as img:
                size = img.size
        except (OSError, ValueError):
            size = None  # a bad image: the checked image loader names it
        try:
            with Image.open(seg_path) as seg:
                seg_size, mode = seg.size, seg.mode
                values = None
                if step and i % step == 0:
                    import numpy as np
                    values = np.unique(np.asarray(seg))
        except (OSError, ValueError) as err:
            problems.setdefault('unreadable files', []).append(f'{seg_path} ({err})')
            continue
        if size is not None and min(size) < min_side:
            problems.setdefault(
                f'images smaller than {min_side} px a side (the backbone '
                f'downsamples by 32: nothing of such an image survives to its '
                f'last stage, and batch norm fails on 1x1 features)',
                []).append(f'{img_path} {size[0]}x{size[1]}')
            continue
        if mode in ('RGB', 'RGBA', 'CMYK', 'YCbCr', 'LA'):
            problems.setdefault('colour label maps (labels must be one '
                                'channel of class indices, e.g. a palette '
                                'or greyscale PNG)', []).append(f'{seg_path} ({mode})')
            continue
        if size is not None and seg_size != size:
            problems.setdefault('label maps of another size than their image',
                                []).append(f'{seg_path} {seg_size[0]}x{seg_size[1]}, '
                                           f'image {size[0]}x{size[1]}')
            continue
        if values is not None:
            out = [int(v) for v in values if v > top and v != ignore_index]
            if out:
                problems.setdefault(
                    f'label values outside 0..{top} (and {ignore_index}, '
                    f'ignored) for {num_classes} classes'
                    + (' with reduce_zero_label' if reduce_zero_label else ''),
                    []).append(f'{seg_path}: {out[:5]}')
    if problems:
        raise BadAnnotationError(
            'Segmentation labels that cannot be trained or evaluated on:\n' +
            '\n'.join(f'    {len(v)} {k}: {_examples(v)}'
                      for k, v in problems.items()))


def check_annotations(cfg: Any, splits: Sequence[str] = ('train', 'val', 'test'),
                      logger: str = 'current') -> None:
    """Check the annotations of a config's datasets (after :func:`check_data`
    found the paths): COCO files with :func:`check_coco_file` (its warnings
    logged, counted), segmentation label maps with :func:`check_seg_labels`
    (the dataset built through the config's library to list its files).
    ``check_annotations = False`` in the config turns it off (parsing COCO
    train2017's 450 MB file takes some seconds and a few GB of memory).

    Raises:
        BadAnnotationError: Naming the file and what is wrong.
    """
    if _get(cfg, 'check_annotations', True) is False:
        return
    checked = set()
    for split in splits:
        for key, ds in split_datasets(cfg, split):
            if not _is_local(_get(ds, 'data_root') or '', _get(ds, 'backend_args')):
                continue
            ann_file = _get(ds, 'ann_file') or ''
            if ann_file.endswith('.json'):
                path = _join(_get(ds, 'data_root') or '', ann_file)
                classes = (_get(ds, 'metainfo') or {}).get('classes')
                filter_cfg = _get(ds, 'filter_cfg') if split == 'train' else None
                for line in check_coco_file(path, classes, filter_cfg):
                    print_log(f'[{key}] {line}', logger=logger,
                              level=logging.WARNING)
                checked.add(osp.normpath(path))
            elif _get(cfg, 'default_scope') == 'mmseg' and \
                    _get(_get(ds, 'data_prefix') or {}, 'seg_map_path'):
                check_dataset_labels(ds)
    # the evaluators' COCO files (CocoMetric reads its own ann_file)
    for key, path in dataset_paths(cfg, splits):
        if '_evaluator' in key and path.endswith('.json') and \
                osp.normpath(path) not in checked and osp.isfile(path):
            check_coco_file(path)


def _seg_dataset(ds_cfg: Any) -> Any:
    """The mmseg dataset of a dataset config, built without its pipeline
    and keeping its ``data_list``."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    ds_cfg = copy.deepcopy(ds_cfg)
    ds_cfg['pipeline'] = []
    ds_cfg['serialize_data'] = False  # keep data_list
    return importlib.import_module('mmseg.registry').DATASETS.build(ds_cfg)


def check_dataset_labels(ds_cfg: Any) -> None:
    """:func:`check_seg_labels` on the files an mmseg dataset config lists."""
    dataset = _seg_dataset(ds_cfg)
    if getattr(dataset, 'label_map', None):
        return  # values are remapped: the raw ids are not class indices
    pairs = [(d['img_path'], d['seg_map_path']) for d in dataset.data_list
             if d.get('seg_map_path')]
    check_seg_labels(pairs, len(dataset.metainfo['classes']),
                     bool(ds_cfg.get('reduce_zero_label', False)),
                     getattr(dataset, 'ignore_index', 255))


def largest_images(cfg: Any, splits: Sequence[str] = ('train', 'val', 'test'),
                   n: int = 3) -> List[Tuple[int, int, str]]:
    """The ``n`` largest images (``(width, height, path)``, largest first)
    of a config's local datasets: from a COCO file's ``width`` / ``height``,
    or the image headers of an mmseg dataset's files. For the hint after an
    allocation failure; datasets that cannot be listed are skipped."""
    from PIL import Image
    found: List[Tuple[int, int, str]] = []
    for split in splits:
        for _, ds in split_datasets(cfg, split):
            root = _get(ds, 'data_root') or ''
            ann_file = _get(ds, 'ann_file') or ''
            try:
                if ann_file.endswith('.json'):
                    with open(_join(root, ann_file)) as f:
                        images = json.load(f)['images']
                    prefix = _join(root, (_get(ds, 'data_prefix') or {}).get('img', ''))
                    found += [(int(i['width']), int(i['height']),
                               osp.join(prefix, i['file_name'])) for i in images]
                elif _get(cfg, 'default_scope') == 'mmseg':
                    for item in _seg_dataset(ds).data_list:
                        with Image.open(item['img_path']) as img:
                            found.append((*img.size, item['img_path']))
            except Exception:  # a hint only: never hide the original error
                continue
    found = sorted(set(found), key=lambda t: -t[0] * t[1])
    return found[:n]
