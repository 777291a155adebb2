# Copyright (c) mmvit3 authors. All rights reserved.
"""Checked image loading for a whole run, through any tool that builds a
Runner (this project's tools, mmdet's / mmseg's own ``tools/train.py`` /
``test.py``, ``mim train`` / ``mim test``) once the config names the hook:

    custom_hooks = [dict(type='CheckedImageLoadingHook')]

The config itself keeps ``LoadImageFromFile``: the copy saved in the work
dir and in checkpoints works in the inferencers as it is.
"""
import difflib
import logging
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop

from ..config import check_project_keys
from ..datasets import use_checked_loaders

#: The registered name of :class:`CheckedImageLoadingHook`.
CHECKED_LOADING_HOOK = 'CheckedImageLoadingHook'


def _restart_workers(loop: BaseLoop, keep: list) -> None:
    """An iteration-based training loop starts its dataloader's workers when
    it is built, before any hook runs; they hold the old pipeline, so start
    them again (mmengine's ``IterBasedTrainLoop``). The stopped iterator is
    kept in ``keep``: freeing it would close the generator that mmengine's
    ``InfiniteSampler`` shares between iterators, ending the data."""
    iterator = getattr(loop, 'dataloader_iterator', None)
    dataloader = loop.dataloader
    if iterator is None or not getattr(dataloader, 'num_workers', 0):
        return
    started = getattr(iterator, '_iterator', None)
    if hasattr(started, '_shutdown_workers'):
        started._shutdown_workers()
    if getattr(dataloader, '_iterator', None) is started:
        dataloader._iterator = None  # persistent workers: not reused
    keep.append(iterator)
    loop.dataloader_iterator = type(iterator)(dataloader)


class CheckedImageLoadingHook(Hook):
    """At the start of a run, load the images of every dataloader with
    :class:`~mmvit3.datasets.LoadImageFromFileChecked` (a bad file is an
    error naming it), in place of ``LoadImageFromFile`` and with its
    settings; also refuses a misspelt mmvit3 config key
    (:func:`~mmvit3.config.check_project_keys`).

    Args:
        skip_bad_images (bool, optional): Skip bad files of the *training*
            data with a warning naming each, instead of stopping; evaluation
            always stops. Defaults to the config's top-level
            ``skip_bad_images`` (False if it has none).
    """
    priority = 'VERY_HIGH'

    def __init__(self, skip_bad_images: Optional[bool] = None, **unknown):
        if unknown:
            key = next(iter(unknown))
            meant = difflib.get_close_matches(key, ['skip_bad_images'], 1, 0.6)
            raise TypeError(
                f'{CHECKED_LOADING_HOOK} got an unknown argument {key!r}' +
                (f': did you mean {meant[0]!r}?' if meant else
                 '; it takes only skip_bad_images'))
        self.skip_bad_images = skip_bad_images
        self._stopped = []  # see _restart_workers

    def before_run(self, runner) -> None:
        check_project_keys(runner.cfg)
        skip = self.skip_bad_images
        if skip is None:
            skip = bool(runner.cfg.get('skip_bad_images', False))
        swapped = 0
        for attr, split in (('_train_loop', 'train'), ('_val_loop', 'val'),
                            ('_test_loop', 'test')):
            loop = getattr(runner, attr, None)
            if not isinstance(loop, BaseLoop):
                continue  # not built: this run does not use it
            count = use_checked_loaders(loop.dataloader.dataset,
                                        skip and split == 'train')
            if count and split == 'train':
                _restart_workers(loop, self._stopped)
            swapped += count
        if swapped:
            print_log(
                'Checked image loading: a bad image file stops the run '
                'naming it' + (' (training skips it: skip_bad_images)'
                                if skip else ''),
                logger='current', level=logging.INFO)
