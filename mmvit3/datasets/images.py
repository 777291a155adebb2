# Copyright (c) mmvit3 authors. All rights reserved.
"""An image file's size as the pipeline sees it, from its header alone:
the size it decodes to (its EXIF orientation applied the way mmcv's
``imfrombytes`` applies it for the loader's ``color_type`` and
``imdecode_backend``), and what a pipeline's keep-ratio resizes make of it.
No pixel is decoded (Pillow's lazy open reads the header only)."""
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import mmcv
from PIL import Image

from ..config import typed_dicts

#: The EXIF tag of the orientation.
ORIENTATION = 0x0112
#: Orientations that swap width and height (a quarter turn, or a transpose).
TRANSPOSING = (5, 6, 7, 8)
#: Formats whose EXIF orientation cv2 and Pillow apply on decoding.
EXIF_FORMATS = ('JPEG', 'MPO', 'PNG', 'WEBP')
#: What each EXIF orientation does to the stored pixels on decoding.
TURNS = {2: 'mirrored', 3: 'turned 180 degrees', 4: 'flipped upside down',
         5: 'transposed', 6: 'turned 90 degrees clockwise', 7: 'transversed',
         8: 'turned 90 degrees counter-clockwise'}
#: The loaders whose settings decide the decoding.
LOADERS = ('LoadImageFromFile', 'LoadImageFromFileChecked')
#: Keep-ratio resizes, and the keys holding their target scales.
RESIZES = {'Resize': 'scale', 'RandomResize': 'scale', 'RandomChoiceResize': 'scales'}


class Header(NamedTuple):
    """An image file as its header describes it."""
    width: int  # as decoded
    height: int
    stored: Tuple[int, int]  # width, height of the stored pixels
    orientation: int  # EXIF orientation, 1 when none


def orients(color_type: str = 'color', backend: str = 'cv2') -> bool:
    """Whether mmcv's ``imfrombytes(flag=color_type, backend=backend)``
    applies the EXIF orientation: cv2 and Pillow do for ``'color'`` and
    ``'grayscale'``, not for ``'unchanged'`` and the ``*_ignore_orientation``
    flags; turbojpeg and tifffile never do."""
    return color_type in ('color', 'grayscale') and backend in ('cv2', 'pillow')


def _orientation(img: Image.Image) -> int:
    # the EXIF bytes the header holds (Pillow's getexif() would decode a
    # PNG without them to look further)
    raw = img.info.get('exif')
    if img.format not in EXIF_FORMATS or not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
        value = int(exif.get(ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1  # unreadable EXIF: the decoders ignore it too
    return value if value in TURNS else 1


def read_header(path: str, orient: bool = True) -> Header:
    """The header of the image at ``path``; ``orient``: whether the loader
    applies the EXIF orientation (:func:`orients`).

    Raises:
        OSError: The file is missing or not an image Pillow knows.
    """
    with Image.open(path) as img:
        stored = img.size
        orientation = _orientation(img)
    width, height = stored
    if orient and orientation in TRANSPOSING:
        width, height = height, width
    return Header(width, height, stored, orientation if orient else 1)


def loader_settings(pipeline: Any) -> Tuple[str, str]:
    """``(color_type, imdecode_backend)`` of a pipeline config's image
    loader (mmcv's defaults when it names none)."""
    for _, node in typed_dicts(list(pipeline or [])):
        if node.get('type') in LOADERS:
            return node.get('color_type', 'color'), node.get('imdecode_backend', 'cv2')
    return 'color', 'cv2'


def _scales(value: Any) -> Iterator[Tuple[float, float]]:
    """The target scales of a resize's ``scale`` / ``scales`` value: one
    scale, an int, or a list of them."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value), float(value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, (int, float)) for v in value):
        yield float(value[0]), float(value[1])
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _scales(item)


class Rescale(NamedTuple):
    """The smallest target scale of a keep-ratio resize of a pipeline."""
    what: str  # the transform, for messages
    scale: Tuple[float, float]


def keep_ratio_rescales(pipeline: Any) -> List[Rescale]:
    """The keep-ratio resizes of a pipeline config (nested ones too, as in
    ``RandomChoice``), each with the smallest scale it can draw:
    ``RandomResize``'s lowest ``ratio_range``, and for a range of two scales
    their smaller long and short sides (mmcv draws each side between)."""
    found = []
    for _, node in typed_dicts(list(pipeline or [])):
        kind = node.get('type')
        key = RESIZES.get(kind)
        if key is None:
            continue
        keep = node.get('keep_ratio', False)  # RandomResize & co pass it on
        scales = list(_scales(node.get(key)))
        if not keep or not scales:
            continue
        ratio = min(node.get('ratio_range') or (1.0, )) if kind == 'RandomResize' else 1.0
        if kind == 'RandomResize' and not node.get('ratio_range') and len(scales) == 2:
            pairs = [(min(max(s) for s in scales), min(min(s) for s in scales))]
        else:
            pairs = scales
        for a, b in pairs:
            found.append(Rescale(f'{kind}(scale={node.get(key)})', (a * ratio, b * ratio)))
    return found


def rescaled(size: Tuple[int, int], rescale: Rescale) -> Tuple[int, int]:
    """``(width, height)`` of an image of ``size`` after a keep-ratio
    resize to ``rescale`` (mmcv's ``rescale_size``, which mmcv's and mmdet's
    resizes use)."""
    return tuple(mmcv.rescale_size(size, tuple(int(s) for s in rescale.scale)))


def vanishing_rescale(size: Tuple[int, int],
                      rescales: Sequence[Rescale]) -> Optional[Tuple[Rescale, Tuple[int, int]]]:
    """The first of ``rescales`` that leaves an image of ``size`` less than
    one pixel wide or high (cv2 cannot resize to that), with that size, or
    None."""
    for rescale in rescales:
        new = rescaled(size, rescale)
        if min(new) < 1:
            return rescale, new
    return None
