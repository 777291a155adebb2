# Copyright (c) mmvit3 authors. All rights reserved.
"""How long the dataset check takes on a COCO-size file: a synthetic
COCO-format set (:func:`write_synthetic_coco`: a json of many annotations
over image files of known sizes) and the check timed on it
(:func:`time_coco_check`). ``tools/benchmark_data_check.py`` runs both."""
import json
import os
import os.path as osp
import time
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np

from .coco import check_coco, load_coco
from .report import SplitReport

#: Image sizes (width, height) the synthetic set cycles through.
SIZES = ((640, 480), (480, 640), (500, 375), (427, 640))
CATEGORIES = 80


def write_synthetic_coco(out: str, num_annotations: int = 100_000, per_image: int = 8,
                         sizes: Sequence[Tuple[int, int]] = SIZES, seed: int = 0) -> str:
    """Write ``out/annotations.json`` with ``num_annotations`` clean
    annotations (box, 4-point polygon, area) spread ``per_image`` to an image,
    and the images, JPEGs of the sizes listed (one encoding per size, its
    bytes written to each file), under ``out/images/``. Returns the json's
    path."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(out, 'images'), exist_ok=True)
    encoded = {size: cv2.imencode('.jpg', np.full((size[1], size[0], 3), 127, np.uint8))[1]
               .tobytes() for size in sizes}
    num_images = -(-num_annotations // per_image)
    images, annotations = [], []
    for i in range(num_images):
        w, h = sizes[i % len(sizes)]
        name = f'{i:012d}.jpg'
        with open(osp.join(out, 'images', name), 'wb') as f:
            f.write(encoded[(w, h)])
        images.append(dict(id=i, file_name=name, width=w, height=h))
    x = rng.uniform(0, 0.6, (num_annotations, 2))
    wh = rng.uniform(0.05, 0.4, (num_annotations, 2))
    cats = rng.integers(1, CATEGORIES + 1, num_annotations)
    for a in range(num_annotations):
        img = images[a // per_image]
        x0, y0 = x[a, 0] * img['width'], x[a, 1] * img['height']
        bw, bh = wh[a, 0] * img['width'], wh[a, 1] * img['height']
        annotations.append(dict(
            id=a + 1, image_id=img['id'], category_id=int(cats[a]), iscrowd=0,
            bbox=[round(x0, 2), round(y0, 2), round(bw, 2), round(bh, 2)],
            area=round(bw * bh, 2),
            segmentation=[[round(x0, 2), round(y0, 2), round(x0 + bw, 2), round(y0, 2),
                           round(x0 + bw, 2), round(y0 + bh, 2), round(x0, 2),
                           round(y0 + bh, 2)]]))
    path = osp.join(out, 'annotations.json')
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=[dict(id=c, name=f'class{c}')
                                   for c in range(1, CATEGORIES + 1)]), f)
    return path


def time_coco_check(path: str, img_dir: str) -> Dict[str, float]:
    """Seconds of the whole check of ``path`` and its images (the check run
    before training: json, every image header, every annotation, with masks),
    and of the json's parse alone; the counts and findings of the check."""
    start = time.perf_counter()
    load_coco(path)
    parse = time.perf_counter() - start
    report = SplitReport('train', path)
    start = time.perf_counter()
    check_coco(path, report, img_dir=img_dir, with_mask=True, progress=False)
    total = time.perf_counter() - start
    return dict(seconds=total, parse_seconds=parse, images=report.images,
                annotations=report.annotations, findings=len(report.findings))
