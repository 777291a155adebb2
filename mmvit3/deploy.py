# Copyright (c) mmvit3 authors. All rights reserved.
"""Exporting a ViT3 backbone with the input's height and width left free.

Tracers and exporters see the backbone's plain modules whatever its ``impl``
(:mod:`mmvit3.models.impl`), so these are plain ``torch.export`` /
``torch.onnx.export`` calls; what this module adds is the dynamic-size
specification. See docs/export.md.
"""
from pathlib import Path
from typing import Dict, Tuple, Union

import torch

from .errors import ConfigError, OutputError

#: Smallest and largest height / width an exported graph accepts. Below 64 px
#: torch.export (2.13) fails while solving the size constraints of the four
#: down-samplings.
MIN_SIZE, MAX_SIZE = 64, 8192


def dynamic_hw(min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> Dict[str, dict]:
    """``dynamic_shapes`` for ``torch.export.export`` / ``torch.onnx.export``
    of a backbone called as ``model(x)``: height and width of ``x`` free in
    ``[min_size, max_size]``, the batch fixed."""
    from torch.export import Dim
    if not (isinstance(min_size, int) and isinstance(max_size, int)
            and MIN_SIZE <= min_size <= max_size <= MAX_SIZE):
        raise ConfigError(f'dynamic_hw: min_size and max_size must be integers with '
                          f'{MIN_SIZE} <= min_size <= max_size <= {MAX_SIZE}, got '
                          f'min_size={min_size!r}, max_size={max_size!r}')
    return {'x': {2: Dim('height', min=min_size, max=max_size),
                  3: Dim('width', min=min_size, max=max_size)}}


def export_onnx(model: torch.nn.Module,
                path: Union[str, Path],
                example_size: Tuple[int, int] = (224, 224),
                batch: int = 1) -> Path:
    """Export a backbone (in eval mode) to ONNX with the dynamo exporter,
    height and width dynamic; returns the file's path. Needs ``onnx`` and
    ``onnxscript`` (``pip install -e '.[export]'``)."""
    path = Path(path)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, 'out_indices'):
        raise ConfigError(f'export_onnx: model must be a ViT3 / PlainViT3 backbone, got '
                          f'{type(model).__name__}')
    if not (isinstance(example_size, (tuple, list)) and len(example_size) == 2 and all(
            isinstance(s, int) and MIN_SIZE <= s <= MAX_SIZE for s in example_size)):
        raise ConfigError(f'export_onnx: example_size must be (height, width), each an '
                          f'integer in [{MIN_SIZE}, {MAX_SIZE}], got {example_size!r}')
    if not (isinstance(batch, int) and batch >= 1):
        raise ConfigError(f'export_onnx: batch must be a positive integer, got {batch!r}')
    if path.is_dir() or not path.parent.is_dir():
        raise OutputError(f'export_onnx: cannot write {path}: '
                          + ('it is a directory' if path.is_dir() else
                             f'its folder {path.parent} does not exist'))
    model = model.eval()
    param = next(model.parameters())
    x = torch.rand(batch, 3, *example_size, dtype=param.dtype, device=param.device)
    names = [f'out{i}' for i in range(len(getattr(model, 'out_indices', [0] * 4)))]
    with torch.no_grad():
        program = torch.onnx.export(model, (x, ), dynamo=True, dynamic_shapes=dynamic_hw(),
                                    input_names=['image'], output_names=names)
    program.save(str(path))
    return path
