# Copyright (c) mmvit3 authors. All rights reserved.
"""Data: the checked image loader (:mod:`.transforms`), the checks of a
config's data (:mod:`.check`; COCO files entry by entry in :mod:`.coco`,
image headers in :mod:`.images`, what they found in :mod:`.report`), the one
walker through dataset wrappers (:mod:`.walk`) and what outputs must not
replace (:mod:`.outputs`). mmcv / mmengine only; mmdet and mmseg are
imported only by the checks that build a library's dataset."""
from .check import (check_annotations, check_coco_file, check_data, check_dataset,
                    check_seg_labels, dataset_paths, largest_images)
from .coco import check_coco
from .images import orients, read_header
from .outputs import file_id, protected_paths, refuse_dataset_outputs, same_file
from .report import DataReport, SplitReport
from .transforms import (CHECKED_LOADER, LoadImageFromFileChecked, image_bytes_problem,
                         use_checked_image_loading, use_checked_loaders)
from .walk import leaf_datasets, split_datasets, split_metrics

__all__ = [
    'check_annotations', 'check_coco_file', 'check_data', 'check_dataset', 'check_seg_labels',
    'dataset_paths', 'largest_images', 'check_coco', 'orients', 'read_header', 'DataReport',
    'SplitReport', 'CHECKED_LOADER', 'LoadImageFromFileChecked', 'image_bytes_problem',
    'use_checked_image_loading', 'use_checked_loaders', 'leaf_datasets', 'split_datasets',
    'split_metrics', 'file_id', 'protected_paths', 'refuse_dataset_outputs', 'same_file'
]
