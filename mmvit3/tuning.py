# Copyright (c) mmvit3 authors. All rights reserved.
"""Tuning of a CPU process: what the CPU reports (:func:`cpu_isa`), the
choices made from it (:func:`choices`; ``MMVIT3_TUNING`` forces them,
:func:`apply_overrides`), and glibc's ``malloc`` made to keep the memory a
step frees, so that the next step reuses it instead of faulting fresh pages
in.

PyTorch on CPU allocates each step's large tensors anew through ``malloc``.
glibc serves blocks over 32 MiB with ``mmap`` and unmaps them when they are
freed, and gives free memory at the top of its heap back to the system, so
every step writes to pages the kernel must fault in and zero again.
:func:`keep_freed_memory` sets two documented ``mallopt`` parameters:
``M_MMAP_MAX = 0`` (every block from the heap) and ``M_TRIM_THRESHOLD = -1``
(never trim it). The process then keeps its peak: resident memory does not
fall after a large step, and the peak itself can be somewhat higher (a
fragmented heap). The tools apply it to CPU runs only;
``MMVIT3_MALLOC=default`` turns it off. docs/performance_cpu.md has the
measurements.
"""
import ctypes
import os
import platform
import sys
from typing import Dict

from .errors import ConfigError
from .kernels import linear_cpu

#: Environment variable: ``default`` leaves glibc's malloc as it is.
ENV_VAR = 'MMVIT3_MALLOC'
#: Environment variable: choices forced, ``name=value`` pairs separated by
#: commas (:data:`OVERRIDES`); empty: every choice follows the CPU.
TUNING_ENV_VAR = 'MMVIT3_TUNING'
#: What ``MMVIT3_TUNING`` can force: name -> value -> setting.
OVERRIDES = {'linear': {'onednn': True, 'blas': False, 'auto': None}}

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


#: CPU features that decide how fast the kernels can be, as /proc/cpuinfo
#: names them (the first present name of each entry counts).
ISA_FLAGS = (('avx2', ('avx2', )), ('avx512', ('avx512f', )),
             ('avx512_bf16', ('avx512_bf16', )), ('amx', ('amx_bf16', 'amx_tile')))


def cpu_isa(cpuinfo: str = '/proc/cpuinfo') -> list:
    """The vector / matrix extensions this CPU reports (``avx2``, ``avx512``,
    ``avx512_bf16``, ``amx``), from its flags; empty where they cannot be
    read."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), [])
    except OSError:
        return []
    return [name for name, names in ISA_FLAGS if any(n in flags for n in names)]


def malloc_tunable() -> bool:
    """Whether this process runs on glibc, whose ``mallopt`` this module
    sets."""
    return sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


def malloc_setting() -> str:
    """``'keep'`` (the default) or ``'default'``, from ``MMVIT3_MALLOC``.

    Raises:
        ConfigError: ``MMVIT3_MALLOC`` is anything else.
    """
    choice = os.environ.get(ENV_VAR, '').strip().lower() or 'keep'
    if choice not in ('keep', 'default'):
        raise ConfigError(f'{ENV_VAR} must be "keep" (reuse freed memory on CPU '
                         f'runs, the default) or "default" (glibc as it is), '
                         f'got {os.environ[ENV_VAR]!r}')
    return choice


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` serve every block from its heap and never
    return freed memory to the system, for the rest of this process and the
    processes it forks (data loader workers).

    Returns:
        bool: Whether it was applied: False off glibc, with
        ``MMVIT3_MALLOC=default``, or where ``mallopt`` refused.

    Raises:
        ConfigError: ``MMVIT3_MALLOC`` is neither ``keep`` nor ``default``.
    """
    if malloc_setting() == 'default' or not malloc_tunable():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # mallopt returns 1 on success; -1 is SIZE_MAX for the size_t threshold
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1


def parse_overrides(text: str) -> Dict[str, str]:
    """``'linear=blas'`` -> ``{'linear': 'blas'}``.

    Raises:
        ConfigError: an unknown name or value.
    """
    forced = {}
    for item in filter(None, (part.strip() for part in text.split(','))):
        name, _, value = item.partition('=')
        name, value = name.strip().lower(), value.strip().lower()
        if name not in OVERRIDES or value not in OVERRIDES[name]:
            known = '; '.join(f"{n}={'|'.join(v)}" for n, v in OVERRIDES.items())
            raise ConfigError(f'{TUNING_ENV_VAR}: cannot read {item!r}; it takes comma-separated '
                              f'name=value pairs: {known}')
        forced[name] = value
    return forced


def apply_overrides() -> Dict[str, str]:
    """Force the choices ``MMVIT3_TUNING`` names (the others follow the CPU),
    for the rest of this process; mmvit3's tools call it. Returns what it
    forced.

    Raises:
        ConfigError: ``MMVIT3_TUNING`` cannot be read.
    """
    forced = parse_overrides(os.environ.get(TUNING_ENV_VAR, ''))
    try:
        linear_cpu.set_onednn_linear(OVERRIDES['linear'][forced.get('linear', 'auto')])
    except RuntimeError:  # oneDNN forced where torch has none
        raise ConfigError(f'{TUNING_ENV_VAR}=linear=onednn: this torch has no oneDNN linear op; '
                          'use linear=blas or linear=auto') from None
    return forced


def choices() -> Dict[str, str]:
    """Each run-time choice of the fused kernels on CPU, as it stands in this
    process, and why (what the CPU reports, or ``MMVIT3_TUNING``)."""
    onednn = linear_cpu.onednn_linear()
    why = (f'forced by {TUNING_ENV_VAR}' if linear_cpu.onednn_linear_forced() else
           f'torch\'s CPU kernels: {linear_cpu.cpu_capability()}')
    return {'linear': f"{'oneDNN' if onednn else 'BLAS'} float32 matrix products ({why})"}
