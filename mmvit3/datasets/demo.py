# Copyright (c) mmvit3 authors. All rights reserved.
"""Write a small, deterministic synthetic dataset for the demo configs.

Coloured shapes (circle, square, triangle) on textured backgrounds, in two
layouts that the stock MMDetection / MMSegmentation dataset classes read:

    <out>/annotations/instances_train.json   COCO instances (polygon masks)
    <out>/annotations/instances_val.json
    <out>/images/train/*.jpg
    <out>/images/val/*.jpg
    <out>/ade/images/training/*.jpg          ADE20K layout (same images)
    <out>/ade/images/validation/*.jpg
    <out>/ade/annotations/training/*.png     uint8 labels: 0 = background,
    <out>/ade/annotations/validation/*.png   1..3 = the shapes
    <out>/.mmvit3_demo_data.json             the files written: a rerun replaces
                                             them, anything else it refuses
                                             (unless overwrite=True)

The class of a shape is its outline; its colour is a cue that holds three
times in four (see ``HINT_HUES``), so a randomly initialised model shows
learning within minutes on a CPU. Shapes do not overlap, so every polygon is exactly
the visible mask. The same ``--seed`` (and counts and size) gives identical
bytes; each image has its own random stream, so image ``i`` does not depend
on how many images are written.

``tools/make_demo_data.py`` writes it (:mod:`mmvit3.cli.make_demo_data`).
"""
import colorsys
import json
import os
import os.path as osp
import shutil
import warnings
from typing import Dict, List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..errors import ConfigError, OutputError

CLASSES = ('circle', 'square', 'triangle')
PALETTE = [(220, 20, 60), (0, 128, 255), (60, 180, 75)]
# Colour is a cue, not the rule: most shapes take a hue near their class's
# (red circles, blue squares, green triangles), a quarter any hue, so the
# outline is the only reliable cue. The colour cue is what lets a randomly
# initialised model show learning within minutes on a CPU.
HINT_HUES = (0., 220., 120.)
HINT_SPREAD = 35.
HINT_PROB = 0.75
SPLITS = {'train': 'training', 'val': 'validation'}
#: The folders a run replaces, and the file in ``out`` listing what it wrote.
SUBDIRS = ('annotations', 'images', 'ade')
MANIFEST = '.mmvit3_demo_data.json'
JPEG_QUALITY = 95


def _polygon(cls: str, cx: float, cy: float, r: float,
             angle: float) -> np.ndarray:
    """Vertices (K, 2) of a shape of 'radius' ``r`` centred at (cx, cy)."""
    if cls == 'circle':
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    elif cls == 'square':
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
    else:  # equilateral triangle
        t = angle + np.arange(3) * 2 * np.pi / 3
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _shape_colour(rng: np.random.Generator, cls_id: int) -> np.ndarray:
    """BGR colour of a shape: with probability ``HINT_PROB`` a hue near its
    class's hue, otherwise any hue."""
    if rng.random() < HINT_PROB:
        hue = (HINT_HUES[cls_id] + rng.uniform(-HINT_SPREAD, HINT_SPREAD)) % 360
    else:
        hue = rng.uniform(0, 360)
    sat = rng.uniform(0.55, 1.0)
    val = rng.uniform(0.45, 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue / 360, sat, val)
    return np.array([b, g, r], np.float32) * 255


def _rasterise(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """Boolean (h, w) mask of a polygon, as pycocotools rasterises it."""
    with warnings.catch_warnings():
        # pycocotools' numpy 2 DeprecationWarning (__array__ without copy=)
        warnings.simplefilter('ignore', DeprecationWarning)
        rle = mask_utils.frPyObjects([poly.reshape(-1).tolist()], h, w)
        return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background: colour gradient + one of stripes / checker /
    blobs + pixel noise (uint8 BGR)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, size=(2, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    g = (np.cos(theta) * xx + np.sin(theta) * yy) / max(h, w)
    g = (g - g.min()) / (np.ptp(g) + 1e-6)
    img = c0 + (c1 - c0) * g[..., None]
    kind = rng.integers(3)
    amp = rng.uniform(10, 35)
    if kind == 0:  # stripes
        period = rng.uniform(8, 32)
        phi = rng.uniform(0, np.pi)
        tex = np.sin(2 * np.pi * (np.cos(phi) * xx + np.sin(phi) * yy) / period)
    elif kind == 1:  # checker board
        cell = int(rng.integers(8, 24))
        tex = (((xx // cell) + (yy // cell)) % 2) * 2 - 1
    else:  # smooth blobs
        small = rng.normal(size=(max(h // 16, 2), max(w // 16, 2)))
        tex = cv2.resize(small.astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC)
        tex /= np.abs(tex).max() + 1e-6
    img += amp * tex[..., None]
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_sample(seed: int, split: str, index: int, size: int
                ) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    """One image (H, W, 3) uint8 BGR, its label map (H, W) uint8 and its
    objects ``[{'category_id', 'polygon' (K, 2)}]``."""
    rng = np.random.default_rng([seed, 0 if split == 'train' else 1, index])
    h = w = size
    img = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    objects: List[dict] = []
    placed: List[Tuple[float, float, float]] = []
    n_obj = int(rng.integers(1, 5))
    for _ in range(n_obj):
        for _try in range(30):
            r = rng.uniform(0.09, 0.22) * size
            cx = rng.uniform(r + 2, w - r - 2)
            cy = rng.uniform(r + 2, h - r - 2)
            if all((cx - px)**2 + (cy - py)**2 > (r + pr + 3)**2
                   for px, py, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        cls_id = int(rng.integers(len(CLASSES)))
        poly = _polygon(CLASSES[cls_id], cx, cy, r, rng.uniform(0, 2 * np.pi))
        poly = np.round(poly, 2)
        # rasterised as pycocotools does, so the polygon is exactly the mask
        mask = _rasterise(poly, h, w)
        # a colour that stands out from the local background
        bg = img[int(cy), int(cx)].astype(np.float32)
        for _c in range(10):
            colour = _shape_colour(rng, cls_id)
            if np.abs(colour - bg).sum() > 150:
                break
        noise = rng.normal(0, 4, size=(int(mask.sum()), 3))
        img[mask] = np.clip(colour + noise, 0, 255).astype(np.uint8)
        label[mask] = cls_id + 1
        objects.append(dict(category_id=cls_id + 1, polygon=poly,
                            area=int(mask.sum())))
    return img, label, objects


def _coco_ann(obj: dict, ann_id: int, img_id: int) -> dict:
    pts = obj['polygon']
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return dict(
        id=ann_id,
        image_id=img_id,
        category_id=obj['category_id'],
        segmentation=[[round(float(v), 2) for v in pts.reshape(-1)]],
        area=float(obj['area']),
        bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
        iscrowd=0)


def _write_jpg(path: str, img: np.ndarray) -> None:
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok, path
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def _write_png(path: str, img: np.ndarray) -> None:
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    assert ok, path
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def planned_files(num_train: int, num_val: int) -> List[str]:
    """The files :func:`make_demo_data` writes, relative to its ``out``."""
    files = []
    for split, num in (('train', num_train), ('val', num_val)):
        files.append(f'annotations/instances_{split}.json')
        for i in range(num):
            name = f'{split}_{i:05d}'
            files += [f'images/{split}/{name}.jpg',
                      f'ade/images/{SPLITS[split]}/{name}.jpg',
                      f'ade/annotations/{SPLITS[split]}/{name}.png']
    return files


def foreign_files(out: str) -> List[str]:
    """The files (and links) under ``out``'s ``annotations/``, ``images/``
    and ``ade/`` that :func:`make_demo_data` did not write there (not in its
    :data:`MANIFEST`, or linked elsewhere): what a new run would delete."""
    try:
        with open(osp.join(out, MANIFEST)) as f:
            ours = set(json.load(f)['files'])
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    found = []
    for sub in SUBDIRS:
        top = osp.join(out, sub)
        if osp.islink(top) or osp.isfile(top):
            found.append(top)
            continue
        for folder, dirs, files in os.walk(top):
            for name in sorted(files) + sorted(d for d in dirs if osp.islink(osp.join(folder, d))):
                path = osp.join(folder, name)
                if osp.relpath(path, out) not in ours or osp.islink(path) or \
                        os.lstat(path).st_nlink > 1:
                    found.append(path)
    return found


def make_demo_data(out: str = 'data/demo',
                   seed: int = 0,
                   num_train: int = 400,
                   num_val: int = 60,
                   size: int = 256,
                   overwrite: bool = False) -> Dict[str, int]:
    """Write the demo dataset under ``out``, replacing what an earlier run
    wrote there (listed in ``out``/:data:`MANIFEST`); returns the number of
    objects per split.

    Raises:
        OutputError: ``out`` is a file, or its ``annotations/``, ``images/``
            or ``ade/`` hold files this function did not write, which a run
            deletes: refused unless ``overwrite``.
    """
    if size < 32:
        raise ConfigError(f'--size must be at least 32, got {size}')
    if osp.exists(out) and not osp.isdir(out):
        raise OutputError(f'--out {out} exists and is not a folder')
    others = [] if overwrite else foreign_files(out)
    if others:
        more = f' and {len(others) - 1} more' if len(others) > 1 else ''
        raise OutputError(
            f'--out {out} holds files this tool did not write ({others[0]}{more}), '
            f'which it would delete. Choose a new or empty folder, or pass --overwrite '
            f'to replace {", ".join(s + "/" for s in SUBDIRS)} there.')
    cv2.setNumThreads(1)
    for sub in SUBDIRS:
        path = osp.join(out, sub)
        if osp.islink(path) or osp.isfile(path):
            os.remove(path)  # a link is removed, never what it points to
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, MANIFEST), 'w') as f:  # first: a cut-short run is ours too
        json.dump(dict(written_by='tools/make_demo_data.py',
                       files=planned_files(num_train, num_val)), f, indent=0)
    counts = {}
    for split, num in (('train', num_train), ('val', num_val)):
        ade = SPLITS[split]
        img_dir = osp.join(out, 'images', split)
        ade_img_dir = osp.join(out, 'ade', 'images', ade)
        ade_ann_dir = osp.join(out, 'ade', 'annotations', ade)
        for d in (img_dir, ade_img_dir, ade_ann_dir, osp.join(out, 'annotations')):
            os.makedirs(d, exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            img, label, objects = make_sample(seed, split, i, size)
            name = f'{split}_{i:05d}'
            _write_jpg(osp.join(img_dir, name + '.jpg'), img)
            shutil.copyfile(osp.join(img_dir, name + '.jpg'),
                            osp.join(ade_img_dir, name + '.jpg'))
            _write_png(osp.join(ade_ann_dir, name + '.png'), label)
            img_id = i + 1
            images.append(dict(id=img_id, file_name=name + '.jpg',
                               height=label.shape[0], width=label.shape[1]))
            for obj in objects:
                annotations.append(
                    _coco_ann(obj, len(annotations) + 1, img_id))
        coco = dict(
            info=dict(description='mmvit3 synthetic shapes demo',
                      version='1.0', seed=seed),
            licenses=[],
            images=images,
            annotations=annotations,
            categories=[dict(id=k + 1, name=c, supercategory='shape')
                        for k, c in enumerate(CLASSES)])
        with open(osp.join(out, 'annotations', f'instances_{split}.json'),
                  'w') as f:
            json.dump(coco, f, separators=(',', ':'))
        counts[split] = len(annotations)
    return counts
