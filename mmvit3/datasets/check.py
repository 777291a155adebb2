# Copyright (c) mmvit3 authors. All rights reserved.
"""Checks of a config's data before a Runner is built.

* On disk (:func:`check_data`): without it, a missing COCO / ADE20K folder
  surfaces deep inside dataset construction (often in a dataloader worker)
  as a bare ``FileNotFoundError``. It walks the dataloader configs
  (``data_root`` + ``ann_file`` / ``data_prefix``, through dataset
  wrappers) and the evaluators' ``ann_file``, and raises one
  :class:`~mmvit3.errors.DatasetNotFoundError` that names every missing
  path, where the data comes from and how to run the synthetic demo instead.
* Usable (:func:`check_dataset`, reported per split; :func:`check_annotations`
  before a run raises its errors as :class:`~mmvit3.errors.BadAnnotationError`
  and logs its warnings): COCO files entry by entry with their images
  (:mod:`.coco`), segmentation images and label maps, read from their
  headers (:mod:`.images`), that are there but cannot be trained or
  evaluated on.
"""
import copy
import importlib
import json
import logging
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from ..config import config_flag, typed_dicts
from ..errors import BadAnnotationError, DatasetNotFoundError
from .coco import PROGRESS_MIN, SKIPPED_HINT, check_coco
from .images import (TURNS, Rescale, keep_ratio_rescales, loader_settings, orients,
                     read_header, vanishing_rescale)
from .report import ERROR, WARNING, DataReport, SplitReport
from .transforms import SKIP_HINT
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
# annotations and images: files that are there but cannot be used


def check_coco_file(path: str, classes: Optional[Sequence[str]] = None,
                    filter_cfg: Optional[dict] = None) -> List[str]:
    """Check a COCO-style annotation file (its json only, not its images)
    with :func:`~mmvit3.datasets.coco.check_coco`: its errors raised, its
    counted warnings returned as lines (``path: count what: examples``).

    Raises:
        BadAnnotationError: Naming ``path`` and each kind of error.
    """
    report = DataReport()
    check_coco(path, report.add(SplitReport('', path)), classes, filter_cfg)
    if report.errors:
        raise BadAnnotationError(report.error_message())
    return report.warning_lines()


def seg_labels(pairs: Sequence[Tuple[str, str]], report: SplitReport,
               num_classes: Optional[int], reduce_zero_label: bool = False,
               ignore_index: int = 255, max_decoded: int = 500, min_side: int = 32,
               orient: bool = True, rescales: Sequence[Rescale] = (),
               progress: bool = False, skip_bad: bool = False) -> None:
    """Check segmentation label maps against their images into ``report``.

    For every ``(image, label map)`` pair, from the file headers: the label
    map must exist, have its image's size as decoded (``orient``: the
    image loader applies the EXIF orientation; label maps are read
    unturned), and be one channel (a colour label is refused: labels are
    class indices); the image must be at least ``min_side`` pixels a side
    and survive the pipeline's keep-ratio resizes (``rescales``). For up to
    ``max_decoded`` label maps, spread over the set, the values must be
    class indices: ``0 .. num_classes - 1`` (``0 .. num_classes`` with
    ``reduce_zero_label``) or ``ignore_index`` (not checked when
    ``num_classes`` is None). An unreadable image is an error, a warning
    with ``skip_bad`` (training with ``skip_bad_images``).
    """
    from PIL import Image
    step = max(1, len(pairs) // max_decoded) if max_decoded and num_classes else 0
    top = (num_classes if reduce_zero_label else num_classes - 1) if num_classes else 0
    bar = ProgressBar(len(pairs), file=sys.stdout) \
        if progress and len(pairs) >= PROGRESS_MIN else None
    for i, (img_path, seg_path) in enumerate(pairs):
        if bar is not None:
            bar.update()
        if not osp.isfile(seg_path):
            report.add('label maps missing', seg_path)
            continue
        try:
            header = read_header(img_path, orient)
            size = header.width, header.height
        except (OSError, ValueError, SyntaxError) as err:
            report.add('unreadable image files', f'{img_path}: {err}',
                       *((WARNING, SKIPPED_HINT) if skip_bad else (ERROR, SKIP_HINT)))
            size = None
        try:
            with Image.open(seg_path) as seg:
                seg_size, mode = seg.size, seg.mode
                values = None
                if step and i % step == 0:
                    values = np.unique(np.asarray(seg))
        except (OSError, ValueError, SyntaxError) as err:
            report.add('unreadable files', f'{seg_path} ({err})')
            continue
        if size is not None and min(size) < min_side:
            report.add(
                f'images smaller than {min_side} px a side (the backbone '
                f'downsamples by 32: nothing of such an image survives to its '
                f'last stage, and batch norm fails on 1x1 features)',
                f'{img_path} {size[0]}x{size[1]}')
            continue
        vanished = vanishing_rescale(size, rescales) if size is not None else None
        if vanished:
            report.add('images the pipeline resizes to nothing (cv2 cannot resize them)',
                       f'{img_path}: {size[0]}x{size[1]} becomes {vanished[1][0]}x'
                       f'{vanished[1][1]} in {vanished[0].what}',
                       hint='Crop or leave out images of such an extreme aspect ratio.')
            continue
        if mode in ('RGB', 'RGBA', 'CMYK', 'YCbCr', 'LA'):
            report.add('colour label maps (labels must be one channel of class indices, '
                       'e.g. a palette or greyscale PNG)', f'{seg_path} ({mode})')
            continue
        if size is not None and seg_size != size:
            turned = f', EXIF orientation {header.orientation} ' \
                f'({TURNS[header.orientation]} on decoding)' \
                if header.orientation in TURNS else ''
            report.add('label maps of another size than their image',
                       f'{seg_path} {seg_size[0]}x{seg_size[1]}, image {size[0]}x{size[1]}'
                       f'{turned}')
            continue
        if values is not None:
            out = [int(v) for v in values if v > top and v != ignore_index]
            if out:
                report.add(
                    f'label values outside 0..{top} (and {ignore_index}, '
                    f'ignored) for {num_classes} classes'
                    + (' with reduce_zero_label' if reduce_zero_label else ''),
                    f'{seg_path}: {out[:5]}')
    if bar is not None:
        print()


def check_seg_labels(pairs: Sequence[Tuple[str, str]], num_classes: int,
                     reduce_zero_label: bool = False, ignore_index: int = 255,
                     max_decoded: int = 500, min_side: int = 32) -> None:
    """:func:`seg_labels` of ``pairs``, its problems raised.

    Raises:
        BadAnnotationError: Naming the first files of each problem.
    """
    report = SplitReport('', 'segmentation labels')
    seg_labels(pairs, report, num_classes, reduce_zero_label, ignore_index, max_decoded,
               min_side)
    if report.findings:
        raise BadAnnotationError(
            'Segmentation labels that cannot be trained or evaluated on:\n' +
            '\n'.join(f'    {f.line()}' for f in report.findings.values()))


def _loads_masks(pipeline: Any) -> bool:
    return any(node.get('type') == 'LoadAnnotations' and node.get('with_mask', False)
               for _, node in typed_dicts(list(pipeline or [])))


def _check_coco_dataset(ds: Any, split: str, report: SplitReport, progress: bool,
                        skip_bad: bool) -> None:
    root = _get(ds, 'data_root') or ''
    prefix = _get(_get(ds, 'data_prefix') or {}, 'img', '')
    color_type, backend = loader_settings(_get(ds, 'pipeline'))
    check_coco(report.source, report, (_get(ds, 'metainfo') or {}).get('classes'),
               _get(ds, 'filter_cfg') if split == 'train' else None,
               img_dir=_join(root, prefix), orient=orients(color_type, backend),
               rescales=keep_ratio_rescales(_get(ds, 'pipeline')),
               with_mask=_loads_masks(_get(ds, 'pipeline')), color_type=color_type,
               backend=backend, progress=progress, skip_bad=skip_bad)


def _check_seg_dataset(ds: Any, report: SplitReport, progress: bool, skip_bad: bool) -> None:
    dataset = _seg_dataset(ds)
    pairs = [(d['img_path'], d['seg_map_path']) for d in dataset.data_list
             if d.get('seg_map_path')]
    report.images = len(dataset.data_list)
    if not dataset.data_list:
        report.add('splits without images (mmengine would stop with "need at least one '
                   'array to concatenate")',
                   f'no file ending in {getattr(dataset, "img_suffix", "")!r} under '
                   f'{report.source}',
                   hint='Put the images there, or point data_root / data_prefix.img_path '
                   'at them.')
        return
    color_type, backend = loader_settings(_get(ds, 'pipeline'))
    seg_labels(pairs, report,
               None if getattr(dataset, 'label_map', None) else len(
                   dataset.metainfo['classes']),  # remapped ids are no class indices
               bool(_get(ds, 'reduce_zero_label', False)),
               getattr(dataset, 'ignore_index', 255), orient=orients(color_type, backend),
               rescales=keep_ratio_rescales(_get(ds, 'pipeline')), progress=progress,
               skip_bad=skip_bad)


def check_dataset(cfg: Any, splits: Sequence[str] = ('train', 'val', 'test'),
                  progress: bool = True) -> DataReport:
    """Check the data of a config's splits (after :func:`check_data` found
    the paths) and report what was found, per split: COCO files entry by
    entry with their images (:func:`~mmvit3.datasets.coco.check_coco`),
    segmentation datasets' images and label maps (:func:`seg_labels`, the
    dataset built through mmseg to list its files), and the evaluators' own
    COCO files. A dataset another split already checked is reported as
    that split's. An annotation file that cannot be used at all is one
    error of its split.

    Args:
        progress (bool): A progress bar for long image passes.
    """
    report = DataReport()
    checked: Dict[str, str] = {}
    for split in splits:
        for key, ds in split_datasets(cfg, split):
            if not _is_local(_get(ds, 'data_root') or '', _get(ds, 'backend_args')):
                continue
            root, ann_file = _get(ds, 'data_root') or '', _get(ds, 'ann_file') or ''
            if ann_file.endswith('.json'):
                source = _join(root, ann_file)
            elif _get(cfg, 'default_scope') == 'mmseg' and \
                    _get(_get(ds, 'data_prefix') or {}, 'seg_map_path'):
                source = _join(root, _get(ds, 'data_prefix').get('img_path', ''))
            else:
                continue
            part = report.add(SplitReport(split, source, key))
            if osp.normpath(source) in checked:
                part.same_as = checked[osp.normpath(source)]
                continue
            checked[osp.normpath(source)] = split
            skip_bad = split == 'train' and config_flag(cfg, 'skip_bad_images')
            try:
                if ann_file.endswith('.json'):
                    _check_coco_dataset(ds, split, part, progress, skip_bad)
                else:
                    _check_seg_dataset(ds, part, progress, skip_bad)
            except BadAnnotationError as err:
                part.add('unusable annotation files', str(err))
    # the evaluators' COCO files (CocoMetric reads its own ann_file)
    for key, path in dataset_paths(cfg, splits):
        if '_evaluator' in key and path.endswith('.json') and \
                osp.normpath(path) not in checked and osp.isfile(path):
            checked[osp.normpath(path)] = key
            part = report.add(SplitReport(key.split('.')[0], path, key))
            try:
                check_coco(path, part)
            except BadAnnotationError as err:
                part.add('unusable annotation files', str(err))
    return report


def check_annotations(cfg: Any, splits: Sequence[str] = ('train', 'val', 'test'),
                      logger: str = 'current') -> DataReport:
    """:func:`check_dataset` before a run: its warnings logged (counted,
    with examples), its errors raised. ``check_annotations = False`` in the
    config turns it off (it reads every image header and parses each COCO
    file: seconds for COCO, see docs/reliability.md).

    Raises:
        BadAnnotationError: Naming each kind of error, its count and first
            files.
    """
    if _get(cfg, 'check_annotations', True) is False:
        return DataReport()
    report = check_dataset(cfg, splits)
    for line in report.warning_lines():
        print_log(line, logger=logger, level=logging.WARNING)
    if report.errors:
        raise BadAnnotationError(report.error_message())
    return report


def _seg_dataset(ds_cfg: Any) -> Any:
    """The mmseg dataset of a dataset config, built without its pipeline
    and keeping its ``data_list``."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    ds_cfg = copy.deepcopy(ds_cfg)
    ds_cfg['pipeline'] = []
    ds_cfg['serialize_data'] = False  # keep data_list
    return importlib.import_module('mmseg.registry').DATASETS.build(ds_cfg)


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
