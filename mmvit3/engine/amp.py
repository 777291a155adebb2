# Copyright (c) mmvit3 authors. All rights reserved.
"""bfloat16 autocast where it pays and works: the backbone and the neck.

Autocasting a whole detector on CPU fails: mmcv's CPU ops (``nms``,
``RoIAlign``) take float32 only, and box coordinates of a 1333-px image lose
up to 4 px in bfloat16's 8-bit mantissa. Almost all of the compute is the
feature extractor, so that is what runs under autocast here; its outputs
come back as float32 and the heads, losses and box decoding stay float32.

* Training: :class:`BF16AmpOptimWrapper` (``optim_wrapper.type``, like
  mmengine's ``AmpOptimWrapper``, which refuses a machine without a GPU;
  bfloat16 needs no loss scaling). ``tools/train.py --amp`` picks it on a
  machine without CUDA.
* Testing: mmengine's own ``fp16=True`` of ``val_cfg`` / ``test_cfg``
  (``tools/test.py --amp`` sets it): on CPU :class:`AmpHook` takes the
  loop's whole-step autocast back and autocasts the feature extractor
  instead; on CUDA the loop's autocast stays as mmengine runs it.
* Anywhere else (the inferencers, a script): :func:`feature_autocast`.
"""
import contextlib
import functools
import logging
from typing import Any, Dict, Iterator, Optional, Union

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper

from ..errors import ConfigError
from ..tuning import cpu_isa
from .hooks import unwrapped_model

#: the parts of a detector / segmentor that hold almost all of its compute:
#: compiled by CompileHook, autocast here
FEATURE_PARTS = ('backbone', 'neck')
DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}
#: what cpu_isa() calls the CPU features that compute in bfloat16
BF16_ISA = {'avx512_bf16', 'amx'}


def amp_dtype(value: Union[str, torch.dtype]) -> torch.dtype:
    """``torch.bfloat16`` / ``torch.float16`` from a dtype or its name."""
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    raise ConfigError(f'amp dtype must be one of {sorted(DTYPES)}, got {value!r}')


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    return out


def feature_parts(model: nn.Module) -> Dict[str, nn.Module]:
    """The model's backbone and neck (those it has) by name, through model
    wrappers."""
    model = getattr(model, 'module', model)  # DDP and TTA wrappers
    return {name: getattr(model, name) for name in FEATURE_PARTS
            if isinstance(getattr(model, name, None), nn.Module)}


@functools.lru_cache(maxsize=None)
def warn_if_bf16_is_emulated() -> bool:
    """Log once per process, and return True, when this CPU has no bfloat16
    matrix instructions (avx512_bf16 or AMX): bfloat16 autocast then only
    adds conversions around float32 arithmetic."""
    isa = cpu_isa()
    if BF16_ISA & set(isa):
        return False
    print_log(f'bfloat16 autocast on a CPU without bfloat16 matrix instructions (it reports '
              f'{" ".join(isa) or "no known vector extensions"}; none of '
              f'{", ".join(sorted(BF16_ISA))}): expect it to be slower than float32',
              logger='current', level=logging.WARNING)
    return True


def _autocast_forward(inner, dtype: torch.dtype):
    def forward(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), 'cpu')
        if device == 'cpu' and dtype is torch.bfloat16:
            warn_if_bf16_is_emulated()
        with torch.autocast(device, dtype=dtype):
            return _to_float32(inner(*args, **kwargs))

    return forward


@contextlib.contextmanager
def feature_autocast(model: nn.Module, dtype: Union[str, torch.dtype] = torch.bfloat16,
                     enabled: bool = True) -> Iterator[None]:
    """Inside the block, the model's backbone and neck run under autocast
    (``dtype``, on the device of their input) and hand float32 outputs to
    the rest of the model.

    Args:
        model (nn.Module): A detector or segmentor (or a wrapper of one).
        dtype (str | torch.dtype): ``'bfloat16'`` or ``'float16'``.
            Defaults to bfloat16.
        enabled (bool): False leaves the model as it is. Defaults to True.
    """
    dtype = amp_dtype(dtype)
    # what each part's forward is now: the class's (None) or one installed
    # as an attribute before (CompileHook's); it comes back on exit
    saved = [(part, vars(part).get('forward'))
             for part in (feature_parts(model).values() if enabled else [])]
    for part, _ in saved:
        part.forward = _autocast_forward(part.forward, dtype)
    try:
        yield
    finally:
        for part, previous in saved:
            if previous is None:
                del part.forward
            else:
                part.forward = previous


class BF16AmpOptimWrapper(OptimWrapper):
    """Mixed-precision training on any device, CPU included: the backbone and
    neck run under bfloat16 autocast (:func:`feature_autocast`), the rest
    and the optimizer step in float32. bfloat16 has float32's range, so no
    loss scaling. Use it as ``optim_wrapper=dict(type='BF16AmpOptimWrapper',
    optimizer=...)``; other arguments as mmengine's ``OptimWrapper``.

    Args:
        dtype (str): The autocast dtype. Defaults to ``'bfloat16'``.
    """

    def __init__(self, *args, dtype: str = 'bfloat16', **kwargs):
        super().__init__(*args, **kwargs)
        if amp_dtype(dtype) is not torch.bfloat16:
            raise ConfigError(f'BF16AmpOptimWrapper: dtype must be bfloat16, got '
                              f'{dtype!r} (float16 needs loss scaling: mmengine\'s '
                              f'AmpOptimWrapper, on a GPU)')
        self.cast_dtype = torch.bfloat16

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), feature_autocast(model, self.cast_dtype):
            yield


class AmpHook(Hook):
    """mmengine's ``fp16=True`` of ``val_cfg`` / ``test_cfg`` (autocast of
    each whole step) on a CPU: taken back for that loop and replaced by
    bfloat16 autocast of the backbone and neck (:func:`feature_autocast`),
    which mmcv's float32-only CPU ops allow. On CUDA the loop autocasts as
    mmengine does."""

    priority = 'VERY_LOW'

    def __init__(self):
        self._stack: Optional[contextlib.ExitStack] = None

    def _begin(self, runner, loop) -> None:
        model = unwrapped_model(runner)
        device = next((p.device.type for p in model.parameters()), 'cpu')
        if not getattr(loop, 'fp16', False) or device != 'cpu':
            return
        loop.fp16 = False
        self._stack = contextlib.ExitStack()
        self._stack.callback(setattr, loop, 'fp16', True)
        self._stack.enter_context(feature_autocast(model, torch.bfloat16))
        print_log(f'fp16=True on CPU: {" and ".join(FEATURE_PARTS)} under bfloat16 '
                  f'autocast, heads in float32', logger='current')

    def _end(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def before_val(self, runner) -> None:
        self._begin(runner, runner.val_loop)

    def after_val(self, runner) -> None:
        self._end()

    def before_test(self, runner) -> None:
        self._begin(runner, runner.test_loop)

    def after_test(self, runner) -> None:
        self._end()
