# Copyright (c) mmvit3 authors. All rights reserved.
"""Data pipeline pieces (mmcv / mmengine only)."""
from .hooks import CHECKED_LOADING_HOOK, CheckedImageLoadingHook
from .transforms import (CHECKED_LOADER, BadImageError,
                         LoadImageFromFileChecked, image_bytes_problem,
                         use_checked_image_loading, use_checked_loaders)

__all__ = [
    'CHECKED_LOADER', 'CHECKED_LOADING_HOOK', 'BadImageError',
    'CheckedImageLoadingHook', 'LoadImageFromFileChecked',
    'image_bytes_problem', 'use_checked_image_loading', 'use_checked_loaders'
]
