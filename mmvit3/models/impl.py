# Copyright (c) mmvit3 authors. All rights reserved.
"""The one switch between the model's plain modules and the fused kernels.

A module that has a fused implementation keeps an ``impl`` attribute and
asks :func:`fused_forward` at the top of its ``forward``:

* ``'plain'``: always the module's own (plain) code;
* ``'fused'``: the fused forward registered for the module's class
  (:func:`register`, in :mod:`.fused`) wherever it runs on the input's
  device;
* ``'auto'`` (the default): ``'fused'`` on the devices the kernels were
  measured to be faster on (:data:`AUTO_DEVICES`), ``'plain'`` elsewhere.

Whatever the setting, tools that record a model's operations but cannot see
inside a custom op get the plain code (:func:`tracing`): ``torch.jit``
tracing and scripting (mmengine's FLOP analyzer traces), the ONNX exporters
and ``torch.export``. ``torch.compile`` sees the fused kernels: they are
custom ops (``torch.ops.mmvit3.*``) with shape functions and registered
gradients.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ..errors import ConfigError

#: The choices of ``impl``.
IMPLS = ('auto', 'plain', 'fused')
#: Devices ``impl='auto'`` runs the fused kernels on: where they were
#: measured (CPU); CUDA runs the plain path until measured there.
AUTO_DEVICES = ('cpu', )

# module class -> (fused forward, devices it runs on or None for any)
_FUSED: Dict[type, Tuple[Callable, Optional[Tuple[str, ...]]]] = {}


def check_impl(impl: str) -> str:
    """``impl`` if it is one of :data:`IMPLS`, else
    :class:`~mmvit3.errors.ConfigError` (a ``ValueError``)."""
    if impl not in IMPLS:
        raise ConfigError(f'impl must be one of {IMPLS}, got {impl!r}')
    return impl


def register(cls: type, devices: Optional[Sequence[str]] = None) -> Callable:
    """Decorator: ``fn(module, *args)`` is the fused forward of modules of
    class ``cls`` (exactly, not its subclasses) on ``devices`` (None: any
    device)."""

    def wrap(fn: Callable) -> Callable:
        _FUSED[cls] = (fn, None if devices is None else tuple(devices))
        return fn

    return wrap


def tracing() -> bool:
    """Whether a tracer, scripter or exporter that cannot see custom ops
    records the model now (``torch.compile`` is not one of them)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def fused_forward(module: torch.nn.Module, x: torch.Tensor) -> Optional[Callable]:
    """The fused forward to run for ``module`` on input ``x``, or None for
    the module's plain code (see the module docstring)."""
    impl = module.impl
    if impl == 'plain' or tracing():
        return None
    if impl == 'auto' and x.device.type not in AUTO_DEVICES:
        return None
    entry = _FUSED.get(type(module))
    if entry is None or (entry[1] is not None and x.device.type not in entry[1]):
        return None
    return entry[0]
