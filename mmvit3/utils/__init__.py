# Copyright (c) mmvit3 authors. All rights reserved.
"""Helpers for the command-line tools."""
from .data_check import DatasetNotFoundError, check_data, dataset_paths
from .errors import (AmpUnavailableError, UnknownTypeError, check_amp,
                     explain_unknown_types, unknown_type_message)
from .tensorboard import enable_tensorboard

__all__ = [
    'DatasetNotFoundError', 'check_data', 'dataset_paths',
    'AmpUnavailableError', 'UnknownTypeError', 'check_amp',
    'explain_unknown_types', 'unknown_type_message', 'enable_tensorboard'
]
