# Copyright (c) mmvit3 authors. All rights reserved.
"""Helpers for the command-line tools."""
from .data_check import (BadAnnotationError, DatasetNotFoundError,
                         check_annotations, check_data, dataset_paths)
from .errors import (AmpUnavailableError, UnknownTypeError, check_amp,
                     explain_unknown_types, unknown_type_message)
from .tensorboard import enable_tensorboard

__all__ = [
    'BadAnnotationError', 'DatasetNotFoundError', 'check_annotations',
    'check_data', 'dataset_paths',
    'AmpUnavailableError', 'UnknownTypeError', 'check_amp',
    'explain_unknown_types', 'unknown_type_message', 'enable_tensorboard'
]
