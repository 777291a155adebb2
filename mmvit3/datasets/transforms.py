# Copyright (c) mmvit3 authors. All rights reserved.
"""Image loading that stops at a bad file, naming it, instead of training on
garbage.

mmcv's ``LoadImageFromFile`` decodes whatever bytes it reads. A JPEG cut
short (an interrupted download or copy) decodes *without an error*: libjpeg
fills the missing rows with grey and only prints "Premature end of JPEG
file" to stderr, so the model trains on a half-grey image. A file that is
not an image at all fails with an assertion or an ``AttributeError`` deep in
the pipeline. :class:`LoadImageFromFileChecked` takes the same arguments and
instead raises :class:`~mmvit3.errors.BadImageError` naming the file and the
problem (a truncated JPEG or PNG is recognised from its structure, before
decoding);
with ``skip_bad_images=True`` it returns ``None`` with a warning naming the
file, and mmengine's ``BaseDataset`` draws another sample (training only:
evaluation needs every image).

:class:`~mmvit3.engine.CheckedImageLoadingHook` (named in the recipes'
``custom_hooks``, and added by ``tools/train.py`` / ``tools/test.py`` to any
config) puts it in place of ``LoadImageFromFile`` in the *built* datasets at
the start of a run (:func:`use_checked_loaders`), so the configs, and the
copies saved in work dirs and checkpoints, keep the libraries' usual
pipelines; :func:`use_checked_image_loading` does the same on a config, for
datasets built in one's own scripts.

Imports only mmcv and mmengine: :mod:`mmvit3.registration` registers the
transform in MMDetection's and MMSegmentation's ``TRANSFORMS``.
"""
import logging
from typing import Any, Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log

from ..config import typed_dicts
from ..errors import BadImageError
from .walk import split_datasets

#: The registered name of :class:`LoadImageFromFileChecked`.
CHECKED_LOADER = 'LoadImageFromFileChecked'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'
_JPEG_SOS = 0xDA

SKIP_HINT = ('To skip bad images during training instead (each with a '
             'warning), set skip_bad_images = True in the config, e.g. '
             'tools/train.py CONFIG --cfg-options skip_bad_images=True; '
             'evaluation always needs every image.')


def _jpeg_problem(data: bytes) -> Optional[str]:
    """Why a JPEG stream is incomplete, or None. Walks the marker segments
    to the first start-of-scan (skipping embedded thumbnails), then looks
    for the end-of-image marker in the scan data, where a 0xFF byte of
    image data is always followed by 0x00 or a restart marker."""
    pos, size = len(_JPEG_SOI), len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None  # not the layout we know: leave it to the decoder
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
        elif marker == _JPEG_EOI[1]:
            return 'a JPEG file that ends before its image data'
        elif marker == _JPEG_SOS:
            length = int.from_bytes(data[pos + 2:pos + 4], 'big')
            if data.find(_JPEG_EOI, pos + 2 + length) < 0:
                return ('a truncated JPEG file (no end-of-image marker: the '
                        'file was cut short, e.g. by an interrupted download '
                        'or copy)')
            return None
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], 'big')
    return 'a truncated JPEG file (it ends in its header)'


def _png_problem(data: bytes) -> Optional[str]:
    """Why a PNG stream is incomplete (its chunks end before IEND), or
    None."""
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos:pos + 4], 'big')
        if data[pos + 4:pos + 8] == b'IEND':
            return None
        pos += 12 + length  # length, type, data, CRC
    return ('a truncated PNG file (no IEND chunk: the file was cut short, '
            'e.g. by an interrupted download or copy)')


def image_bytes_problem(data: bytes) -> Optional[str]:
    """What is wrong with an image file's bytes that a decoder might not
    report (empty, a truncated JPEG or PNG), or None. Other formats are
    left to the decoder."""
    if not data:
        return 'an empty file (0 bytes)'
    if data.startswith(_JPEG_SOI):
        return _jpeg_problem(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png_problem(data)
    return None


class LoadImageFromFileChecked(LoadImageFromFile):
    """Load an image from file, as mmcv's ``LoadImageFromFile``, but a bad
    file (missing, unreadable, empty, truncated, not an image) raises
    :class:`~mmvit3.errors.BadImageError` naming it, or with
    ``skip_bad_images`` is skipped with a warning naming it.

    Required Keys:

    - img_path

    Modified Keys:

    - img
    - img_shape
    - ori_shape

    Args:
        to_float32 (bool): Convert the image to float32. Defaults to False.
        color_type (str): ``flag`` of :func:`mmcv.imfrombytes`; ``'color'``
            gives three channels also for grayscale and RGBA files.
            Defaults to 'color'.
        imdecode_backend (str): ``backend`` of :func:`mmcv.imfrombytes`.
            Defaults to 'cv2'.
        file_client_args (dict, optional): Deprecated in mmcv, as there.
            Defaults to None.
        ignore_empty (bool): mmcv's switch to skip unreadable files; here
            the same as ``skip_bad_images``. Defaults to False.
        skip_bad_images (bool): Return None for a bad file, with a warning
            naming it (once per file and process), instead of raising.
            mmengine's ``BaseDataset`` then draws another sample in
            training; in test mode it refuses a None sample, so use it for
            training pipelines only. Defaults to False.
        backend_args (dict, optional): File backend arguments, as mmcv's.
            Defaults to None.
    """

    def __init__(self,
                 to_float32: bool = False,
                 color_type: str = 'color',
                 imdecode_backend: str = 'cv2',
                 file_client_args: Optional[dict] = None,
                 ignore_empty: bool = False,
                 *,
                 skip_bad_images: bool = False,
                 backend_args: Optional[dict] = None) -> None:
        super().__init__(
            to_float32=to_float32,
            color_type=color_type,
            imdecode_backend=imdecode_backend,
            file_client_args=file_client_args,
            ignore_empty=ignore_empty,
            backend_args=backend_args)
        self.skip_bad_images = skip_bad_images
        self._warned = set()

    @classmethod
    def from_loader(cls, loader: LoadImageFromFile,
                    skip_bad_images: bool = False) -> 'LoadImageFromFileChecked':
        """The checked loader with the settings of a built mmcv
        ``LoadImageFromFile`` (``loader``)."""
        checked = cls.__new__(cls)
        checked.__dict__.update(vars(loader))
        checked.skip_bad_images = skip_bad_images
        checked._warned = set()
        return checked

    def _read(self, filename: str) -> bytes:
        if self.file_client_args is not None:
            client = fileio.FileClient.infer_client(self.file_client_args,
                                                    filename)
            return client.get(filename)
        return fileio.get(filename, backend_args=self.backend_args)

    def _bad(self, filename: str, problem: str) -> None:
        """Raise, or warn (once per file) and return None when skipping."""
        if not (self.skip_bad_images or self.ignore_empty):
            raise BadImageError(
                f'Bad image file {filename}: {problem}. Replace or remove the '
                f'file (and its annotation entries). {SKIP_HINT}', filename)
        if filename not in self._warned:
            self._warned.add(filename)
            print_log(
                f'Skipped bad image file {filename}: {problem} '
                f'(skip_bad_images is on; the dataset draws another sample)',
                logger='current', level=logging.WARNING)
        return None

    def transform(self, results: dict) -> Optional[dict]:
        """Load ``results['img_path']``; None for a skipped bad file."""
        filename = results['img_path']
        try:
            img_bytes = self._read(filename)
        except Exception as err:  # missing, unreadable, backend errors
            return self._bad(filename,
                             f'it cannot be read ({type(err).__name__}: {err})')
        problem = image_bytes_problem(img_bytes)
        if problem is not None:
            return self._bad(filename, f'it is {problem}')
        try:
            img = mmcv.imfrombytes(
                img_bytes, flag=self.color_type, backend=self.imdecode_backend)
        except Exception as err:
            return self._bad(filename, f'it cannot be decoded as an image '
                             f'({type(err).__name__}: {err})')
        if img is None or img.size == 0:
            return self._bad(
                filename, f'it is not an image the {self.imdecode_backend!r} '
                f'decoder reads ({len(img_bytes)} bytes starting with '
                f'{img_bytes[:8]!r})')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] +
                f', skip_bad_images={self.skip_bad_images})')


def _swap_built_loaders(node: Any, skip: bool, depth: int = 0) -> int:
    """Replace every built ``LoadImageFromFile`` under ``node`` (a Compose,
    or a transform holding others: ``transforms`` of RandomChoice /
    KeyMapper, ``subroutines`` of TestTimeAug) in place; returns how
    many."""
    count = 0
    if depth > 8:  # pipelines nest a few levels; guards odd objects
        return 0
    for attr in ('transforms', 'subroutines'):
        children = getattr(node, attr, None)
        if isinstance(children, list):
            for i, child in enumerate(children):
                if type(child) is LoadImageFromFile:  # not its subclasses
                    children[i] = LoadImageFromFileChecked.from_loader(
                        child, skip)
                    count += 1
                else:
                    count += _swap_built_loaders(child, skip, depth + 1)
        elif children is not None and hasattr(children, 'transforms'):
            count += _swap_built_loaders(children, skip, depth + 1)
    return count


def use_checked_loaders(dataset: Any, skip_bad_images: bool = False) -> int:
    """Put :class:`LoadImageFromFileChecked` in place of every
    ``LoadImageFromFile`` in the pipeline of a *built* dataset (looking
    through wrappers: ``dataset`` / ``datasets`` attributes), in place,
    with the loader's own settings.

    This is what :class:`~mmvit3.engine.CheckedImageLoadingHook` does at
    the start of a run, so that the config (and the copy of it stored in
    work dirs and checkpoints) keeps the libraries' ``LoadImageFromFile``,
    which the inferencers look for.

    Returns:
        int: How many loaders were replaced.
    """
    count = 0
    pipeline = getattr(dataset, 'pipeline', None)
    if pipeline is not None:
        count += _swap_built_loaders(pipeline, skip_bad_images)
    inner = getattr(dataset, 'dataset', None)
    if inner is not None and inner is not dataset:
        count += use_checked_loaders(inner, skip_bad_images)
    for inner in getattr(dataset, 'datasets', None) or ():
        count += use_checked_loaders(inner, skip_bad_images)
    return count


def _is_plain_loader(transform_type: Any) -> bool:
    if isinstance(transform_type, str):
        return transform_type.split('.')[-1] == 'LoadImageFromFile'
    return transform_type is LoadImageFromFile


def _replace_loaders(node: Any, skip: bool) -> int:
    """Replace every ``LoadImageFromFile`` in a pipeline (nested in
    ``TestTimeAug`` / ``RandomChoice`` ... too) in place; returns how many."""
    count = 0
    for _, transform in typed_dicts(node):
        if _is_plain_loader(transform['type']):
            transform['type'] = CHECKED_LOADER
            transform['skip_bad_images'] = skip
            count += 1
        elif transform['type'] in (CHECKED_LOADER, LoadImageFromFileChecked):
            transform.setdefault('skip_bad_images', skip)  # explicit wins
    return count


def use_checked_image_loading(cfg: Any,
                              skip_bad_images: Optional[bool] = None) -> int:
    """Put :class:`LoadImageFromFileChecked` in place of
    ``LoadImageFromFile`` (same arguments) in the pipelines of ``cfg``'s
    train / val / test dataloaders (through dataset wrappers) and its
    ``tta_pipeline``, in place: for building datasets in your own scripts.

    Not for a config that is saved or run by a Runner: the inferencers
    look for ``LoadImageFromFile`` in a saved config; runs get checked
    loading from :class:`~mmvit3.engine.CheckedImageLoadingHook`, which
    leaves the config as it is.

    Args:
        cfg (Config): The config.
        skip_bad_images (bool, optional): Skip bad files in the *training*
            pipeline with a warning instead of stopping; val / test always
            stop. Defaults to the config's top-level ``skip_bad_images``
            (False if it has none).

    Returns:
        int: How many loaders were replaced.
    """
    if skip_bad_images is None:
        skip_bad_images = bool(cfg.get('skip_bad_images', False))
    count = 0
    for split in ('train', 'val', 'test'):
        for _, dataset in split_datasets(cfg, split):
            count += _replace_loaders(
                dataset.get('pipeline'), skip_bad_images and split == 'train')
    count += _replace_loaders(cfg.get('tta_pipeline'), False)
    return count
