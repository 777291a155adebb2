# Copyright (c) mmvit3 authors. All rights reserved.
"""Helpers for the command-line tools."""
from .data_check import DatasetNotFoundError, check_data, dataset_paths
from .tensorboard import enable_tensorboard

__all__ = [
    'DatasetNotFoundError', 'check_data', 'dataset_paths', 'enable_tensorboard'
]
