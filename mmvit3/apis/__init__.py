# Copyright (c) mmvit3 authors. All rights reserved.
"""Inference through MMDetection's / MMSegmentation's inferencers, with the
checks of this project (imports the libraries only when called)."""
from .inference import (IMAGE_SUFFIXES, build_inferencer, demo_outputs, list_images,
                        run_inferencer)

__all__ = ['IMAGE_SUFFIXES', 'build_inferencer', 'demo_outputs', 'list_images', 'run_inferencer']
