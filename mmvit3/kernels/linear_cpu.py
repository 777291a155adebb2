# Copyright (c) mmvit3 authors. All rights reserved.
"""The float32 matrix products of the fused ops on CPU: torch's
``F.linear`` (the BLAS torch was built with), or oneDNN's matmul.

oneDNN's matmul made the ViT³ backbone faster than the BLAS on an x86 CPU
with AVX-512 and made no difference beyond noise with AVX2 alone
(docs/performance_cpu.md), so it is the choice where torch's CPU kernels
use AVX-512, and the BLAS elsewhere (:func:`onednn_linear_default`).
:func:`set_onednn_linear` forces it (``MMVIT3_TUNING=linear=onednn`` /
``linear=blas`` through :mod:`mmvit3.tuning`).
"""
import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_forced: Optional[bool] = None


def onednn_available() -> bool:
    """Whether this torch has oneDNN's linear op."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_linear_pointwise'))


def cpu_capability() -> str:
    """The kernels torch picked for this CPU (``AVX512``, ``AVX2``, ...; it
    follows ``ATEN_CPU_CAPABILITY``), ``'?'`` where torch cannot say."""
    return getattr(torch.backends.cpu, 'get_cpu_capability', lambda: '?')()


@functools.lru_cache(maxsize=None)
def onednn_linear_default() -> bool:
    """oneDNN where torch has it and its CPU kernels use AVX-512."""
    return onednn_available() and cpu_capability().upper().startswith('AVX512')


def set_onednn_linear(choice: Optional[bool]) -> None:
    """Force oneDNN (True) or torch's ``F.linear`` (False) for the fused ops'
    float32 CPU matrix products; None decides from the CPU again."""
    global _forced
    if choice and not onednn_available():
        raise RuntimeError('this torch has no oneDNN linear op (torch.ops.mkldnn._linear_pointwise)')
    _forced = choice


def onednn_linear_forced() -> bool:
    """Whether :func:`set_onednn_linear` forced the choice."""
    return _forced is not None


def onednn_linear() -> bool:
    """Whether the fused ops' float32 CPU matrix products run through oneDNN."""
    return onednn_linear_default() if _forced is None else _forced


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``; through oneDNN's matmul for float32 CPU
    tensors where :func:`onednn_linear` says so (no autograd: for the
    fused ops' forwards and backwards)."""
    if x.device.type == 'cpu' and x.dtype == weight.dtype == torch.float32 and onednn_linear():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')
    return F.linear(x, weight, bias)
