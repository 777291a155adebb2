# Copyright (c) mmvit3 authors. All rights reserved.
"""Data pipeline pieces (mmcv / mmengine only)."""
from .transforms import (CHECKED_LOADER, BadImageError,
                         LoadImageFromFileChecked, image_bytes_problem,
                         use_checked_image_loading)

__all__ = [
    'CHECKED_LOADER', 'BadImageError', 'LoadImageFromFileChecked',
    'image_bytes_problem', 'use_checked_image_loading'
]
