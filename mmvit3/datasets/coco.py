# Copyright (c) mmvit3 authors. All rights reserved.
"""The check of a COCO-style annotation file and its images
(:func:`check_coco`), entry by entry the way MMDetection's ``CocoDataset``
and ``LoadAnnotations`` read them: what they would fail on, or train on
wrongly, is an error; what they drop or clip themselves is a counted
warning. The json is parsed once; the images are read from their headers
(:mod:`.images`)."""
import json
import math
import os.path as osp
import sys
from typing import Any, Dict, Optional, Sequence

from mmengine.utils import ProgressBar

from ..errors import BadAnnotationError
from .images import TURNS, Rescale, read_header, vanishing_rescale
from .report import ERROR, WARNING, SplitReport
from .transforms import SKIP_HINT

#: Images from which the image pass shows a progress bar.
PROGRESS_MIN = 2000

ORIENTATION_HINT = (
    'The loader (LoadImageFromFile with color_type={color_type!r}, imdecode_backend='
    '{backend!r}) turns these images by their EXIF orientation, so annotations drawn on the '
    'stored pixels would not fit: load them unturned '
    "(color_type='color_ignore_orientation' in every pipeline's LoadImageFromFile), or "
    'turn the files and their annotations and remove the EXIF orientation.')
SKIPPED_HINT = 'skip_bad_images is on: the checked loader skips them in training.'
SIZE_HINT = ('mmdet reads boxes and polygons in the json\'s frame and the masks in the '
             'decoded one: correct width / height in the json (or the files).')


def load_coco(path: str) -> dict:
    """The COCO dict of ``path``, its three lists there.

    Raises:
        BadAnnotationError: The file is empty, not JSON, not a COCO dict, or
            lists no images (an empty split).
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
    if not data['images']:
        raise BadAnnotationError(
            f'Annotation file {path} lists no images: the split would be empty (mmengine '
            f'stops with "need at least one array to concatenate"). Point the config at '
            f'a file with images.')
    return data


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(values: Sequence[Any]) -> bool:
    return all(math.isfinite(v) for v in values)


def _ident(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _categories(data: dict, report: SplitReport,
                classes: Optional[Sequence[str]]) -> Dict[Any, Any]:
    """``{id: name}`` of the file's categories, the config's ``classes``
    checked against them."""
    cats: Dict[Any, Any] = {}
    for cat in data['categories']:
        if not isinstance(cat, dict) or not _ident(cat.get('id')):
            report.add('category entries without an id', repr(cat)[:60])
        elif cat['id'] in cats:
            report.add('repeated category ids', f'category id {cat["id"]!r}')
        else:
            cats[cat['id']] = cat.get('name')
    if classes:
        names = set(cats.values())
        if not names & set(classes):
            raise BadAnnotationError(
                f'Annotation file {report.source}: none of its categories '
                f'({", ".join(sorted(map(str, names))[:8])}) is one of the config\'s classes '
                f'({", ".join(classes)}): every annotation would be dropped. Set '
                f'metainfo.classes to the file\'s category names.')
        for name in classes:
            if name not in names:
                report.add('classes of the config that no category of the file has '
                           '(nothing of them is trained or evaluated)', repr(name), WARNING)
    return cats


def _images(data: dict, report: SplitReport) -> Dict[Any, dict]:
    """``{id: entry}`` of the usable image entries."""
    images: Dict[Any, dict] = {}
    for img in data['images']:
        if not isinstance(img, dict) or not _ident(img.get('id')):
            report.add('image entries without an id', repr(img)[:60])
            continue
        name = img.get('file_name')
        if img['id'] in images:
            report.add('repeated image ids (the COCO API keeps one entry of each)',
                       f'image {img["id"]!r}: {name} and {images[img["id"]].get("file_name")}')
            continue
        if not isinstance(name, str) or not name:
            report.add('image entries without a file_name', f'image {img["id"]!r}')
            continue
        w, h = img.get('width'), img.get('height')
        if not (_number(w) and _number(h) and w > 0 and h > 0):
            report.add('image entries without a positive width and height',
                       f'image {img["id"]!r} ({name}): width={w!r}, height={h!r}')
            continue
        images[img['id']] = img
    report.images = len(images)
    return images


def _image_files(images: Dict[Any, dict], report: SplitReport, img_dir: str,
                 orient: bool, rescales: Sequence[Rescale], color_type: str,
                 backend: str, progress: bool, skip_bad: bool) -> None:
    """Each image file against its entry: there, readable (a warning where
    ``skip_bad``: the checked loader skips it), of the json's size as
    decoded, not resized to nothing by the pipeline."""
    bad = (WARNING, SKIPPED_HINT) if skip_bad else (ERROR, SKIP_HINT)
    bar = ProgressBar(len(images), file=sys.stdout) \
        if progress and len(images) >= PROGRESS_MIN else None
    for iid, img in images.items():
        path = osp.join(img_dir, img['file_name'])
        try:
            header = read_header(path, orient)
        except FileNotFoundError:
            report.add('missing image files', f'{path} (image {iid!r})', *bad)
        except (OSError, ValueError, SyntaxError) as err:
            report.add('unreadable image files', f'{path} (image {iid!r}): {err}', *bad)
        else:
            size = header.width, header.height
            if size != (img['width'], img['height']):
                turned = header.orientation in TURNS
                example = (f'{path}: json {img["width"]}x{img["height"]}, decoded '
                           f'{size[0]}x{size[1]}' +
                           (f', EXIF orientation {header.orientation} ('
                            f'{TURNS[header.orientation]} on decoding)' if turned else ''))
                if turned and header.stored == (img['width'], img['height']):
                    report.add('images that their EXIF orientation turns away from their '
                               'json size', example,
                               hint=ORIENTATION_HINT.format(color_type=color_type,
                                                            backend=backend))
                else:
                    report.add('images whose json width x height is not their decoded size',
                               example, hint=SIZE_HINT)
            vanished = vanishing_rescale(size, rescales)
            if vanished:
                rescale, new = vanished
                report.add(
                    'images the pipeline resizes to nothing (cv2 cannot resize them)',
                    f'{path}: {size[0]}x{size[1]} becomes {new[0]}x{new[1]} in '
                    f'{rescale.what}',
                    hint='Crop or leave out images of such an extreme aspect ratio.')
        if bar is not None:
            bar.update()
    if bar is not None:
        print()


def _segmentation(seg: Any, img: dict, where: str, report: SplitReport) -> bool:
    """Check one annotation's segmentation; whether mmdet keeps its mask."""
    if isinstance(seg, list):
        if not all(isinstance(p, (list, tuple)) and all(map(_number, p)) for p in seg):
            report.add('segmentations that are neither polygons of numbers nor RLE', where)
            return False
        if not all(_finite(p) for p in seg):
            report.add('polygons with NaN or infinite coordinates', where)
            return False
        short = sum(1 for p in seg if len(p) < 6 or len(p) % 2)
        if short:
            report.add('polygons of fewer than 3 points or of an odd number of '
                       'coordinates (mmdet ignores them)',
                       f'{where}: {short} of {len(seg)} polygons', WARNING)
        return short < len(seg)
    if isinstance(seg, dict):
        size, counts = seg.get('size'), seg.get('counts')
        if size != [img['height'], img['width']]:
            report.add('RLE masks of another size than their image',
                       f'{where}: size {size!r}, image [height, width] '
                       f'[{img["height"]}, {img["width"]}]')
            return False
        if isinstance(counts, list):
            if not all(map(_number, counts)) or sum(counts) != size[0] * size[1]:
                report.add('uncompressed RLE whose counts do not add up to height x width',
                           where)
                return False
        elif not isinstance(counts, (str, bytes)):
            report.add('RLE masks without counts', where)
            return False
        return True
    report.add('segmentations that are neither polygons of numbers nor RLE', where)
    return False


def _annotations(data: dict, report: SplitReport, images: Dict[Any, dict],
                 cats: Dict[Any, Any], classes: Optional[Sequence[str]],
                 with_mask: bool) -> set:
    """Each annotation as mmdet's ``CocoDataset.parse_data_info`` reads it;
    the ids of the images that keep a usable (not crowd) object."""
    wanted = {i for i, name in cats.items() if name in set(classes)} if classes else set(cats)
    seen, usable = set(), set()
    for ann in data['annotations']:
        if not isinstance(ann, dict):
            report.add('annotation entries that are no dict', repr(ann)[:60])
            continue
        aid, iid = ann.get('id'), ann.get('image_id')
        img = images.get(iid) if _ident(iid) else None
        where = f'annotation {aid!r} ({img["file_name"] if img else f"image {iid!r}"})'
        if not _ident(aid):
            report.add('annotations without an id', where)
        elif aid in seen:
            report.add('repeated annotation ids (mmdet stops: "Annotation ids are not '
                       'unique")', where)
        else:
            seen.add(aid)
        if img is None:
            report.add('annotations of an image id not in "images" (dropped)', where, WARNING)
            continue
        if ann.get('ignore', False):
            continue
        box = ann.get('bbox')
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(map(_number, box))):
            report.add('boxes that are not [x, y, w, h] numbers (mmdet fails on them)',
                       f'{where}: {box!r}')
            continue
        if not _finite(box):
            report.add('boxes with NaN or infinite values', f'{where}: {box!r}')
            continue
        x, y, w, h = box
        width, height = img['width'], img['height']
        if w < 1 or h < 1:
            report.add('boxes of zero or negative size (dropped)', f'{where}: w={w}, h={h}',
                       WARNING)
            continue
        if max(0, min(x + w, width) - max(x, 0)) * max(0, min(y + h, height) - max(y, 0)) == 0:
            report.add('boxes wholly outside their image (dropped)', f'{where}: {box!r}',
                       WARNING)
            continue
        area = ann.get('area')
        if not (_number(area) and math.isfinite(area)):
            report.add('annotations without a numeric area (mmdet reads it)',
                       f'{where}: area={area!r}')
            continue
        if area <= 0:
            report.add('annotations of zero area (dropped)', where, WARNING)
            continue
        cat = ann.get('category_id')
        if cat not in cats:
            report.add('unknown category ids (dropped)', f'{where}: category_id {cat!r}',
                       WARNING)
            continue
        if cat not in wanted:
            report.add('categories not among the config\'s classes (dropped)',
                       f'{where}: {cats[cat]}', WARNING)
            continue
        if x < 0 or y < 0 or x + w > width or y + h > height:
            report.add('boxes partly outside their image (kept: mmdet\'s Resize clips '
                       'them)', f'{where}: {box!r} in {width}x{height}', WARNING)
        seg = ann.get('segmentation')
        if seg:
            kept = _segmentation(seg, img, where, report)
        else:
            kept = not with_mask
            if with_mask:
                report.add('annotations without a segmentation, in a pipeline that loads '
                           'masks (mmdet fails on them)', where)
        if kept and not ann.get('iscrowd', 0):
            usable.add(iid)
    report.annotations = len(data['annotations'])
    return usable


def check_coco(path: str, report: SplitReport, classes: Optional[Sequence[str]] = None,
               filter_cfg: Optional[dict] = None, img_dir: Optional[str] = None,
               orient: bool = True, rescales: Sequence[Rescale] = (),
               with_mask: bool = False, color_type: str = 'color', backend: str = 'cv2',
               progress: bool = True, skip_bad: bool = False) -> None:
    """Check the COCO file ``path`` into ``report``.

    Args:
        classes: The config's ``metainfo.classes``; None: all categories.
        filter_cfg: The dataset's ``filter_cfg`` in training: with
            ``filter_empty_gt``, an image set left empty is an error.
        img_dir: The folder of the images (``data_root`` + ``data_prefix.img``);
            None skips the image pass.
        orient: Whether the loader applies the EXIF orientation
            (:func:`~mmvit3.datasets.images.orients` of ``color_type``,
            ``backend``, which the messages name).
        rescales: The pipeline's keep-ratio resizes.
        with_mask: Whether the pipeline loads masks.
        progress: A progress bar for a long image pass.
        skip_bad: Missing and unreadable images are warnings (training with
            ``skip_bad_images``: the checked loader skips them).

    Raises:
        BadAnnotationError: The file cannot be used at all (:func:`load_coco`,
            no category among ``classes``, nothing left after ``filter_cfg``).
    """
    data = load_coco(path)
    cats = _categories(data, report, classes)
    images = _images(data, report)
    if img_dir is not None:
        _image_files(images, report, img_dir, orient, rescales, color_type, backend, progress,
                     skip_bad)
    usable = _annotations(data, report, images, cats, classes, with_mask)
    filter_cfg = filter_cfg or {}
    if filter_cfg.get('filter_empty_gt', False):
        min_size = filter_cfg.get('min_size', 0) or 0
        if not any(min(images[i]['width'], images[i]['height']) >= min_size for i in usable):
            raise BadAnnotationError(
                f'Annotation file {path}: no image keeps a usable annotation '
                f'(filter_cfg={dict(filter_cfg)} drops images without one), so '
                f'the dataset would be empty.' +
                (' Problems found: ' + '; '.join(
                    f'{f.count} {f.what}' for f in report.findings.values())
                 if report.findings else ''))
