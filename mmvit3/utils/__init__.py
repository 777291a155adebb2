# Copyright (c) mmvit3 authors. All rights reserved.
"""Helpers for the command-line tools."""
from .data_check import DatasetNotFoundError, check_data, dataset_paths

__all__ = ['DatasetNotFoundError', 'check_data', 'dataset_paths']
