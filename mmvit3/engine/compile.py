# Copyright (c) mmvit3 authors. All rights reserved.
"""``compile=True`` in a config, as a detector or segmentor trains with it.

mmengine's Runner answers ``compile`` by ``torch.compile(model.train_step)``:
the whole step, with the detector's heads (their graphs guard on each
image's metadata, so they recompile for every image until torch gives up)
and the optimizer step (mmengine builds the parameter groups as
``ConfigDict``, which dynamo fails on at the first iteration). What pays is
the backbone and the neck, whose graphs depend on the input size only.
:class:`CompileHook` takes mmengine's compiled ``train_step`` back and
compiles those two instead, for training; inference stays eager.

Each distinct input size is compiled once and kept (``dynamic=False``):
torch 2.13's dynamic shapes fail inside Inductor on the backbone (see
docs/export.md, "compile=True in a config", for minimal reproductions), and the sizes of a recipe are
few (its scales, padded to the data preprocessor's ``pad_size_divisor``).
"""
import logging
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ..errors import ConfigError
from .amp import feature_parts
from .hooks import unwrapped_model


def compile_options(value: Any) -> Optional[Dict[str, Any]]:
    """``torch.compile`` keyword arguments from the config's ``compile``
    value (``True`` or a dict, as mmengine takes it); None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    raise ConfigError(f'compile must be True, False or a dict of torch.compile '
                      f'arguments, got {value!r}')


def _sizes(args) -> tuple:
    return tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)) or tuple(
        tuple(a.shape) for seq in args if isinstance(seq, (list, tuple))
        for a in seq if isinstance(a, torch.Tensor))


def compile_for_training(module: nn.Module, options: Dict[str, Any],
                         max_sizes: int) -> None:
    """Run ``module`` compiled while it trains (one graph per input size, at
    most ``max_sizes`` of them, then eager for new sizes) and eager while it
    does not; each new size is logged once."""
    eager = module.forward
    compiled = torch.compile(eager, **options, dynamic=False)
    seen, past_limit = set(), []

    def forward(*args, **kwargs):
        if not module.training:
            return eager(*args, **kwargs)
        sizes = _sizes(args)
        if sizes not in seen:
            if len(seen) == max_sizes:
                if not past_limit:
                    past_limit.append(sizes)
                    print_log(f'compile: {type(module).__name__} has {max_sizes} '
                              f'sizes compiled (CompileHook max_sizes); new sizes '
                              f'run eager', logger='current', level=logging.WARNING)
                return eager(*args, **kwargs)
            seen.add(sizes)
            print_log(f'compile: {type(module).__name__} for input size '
                      f'{" ".join("x".join(map(str, s)) for s in sizes)} '
                      f'({len(seen)} of at most {max_sizes})', logger='current')
        with torch._dynamo.config.patch(recompile_limit=max_sizes + 1):
            return compiled(*args, **kwargs)

    module.forward = forward


class CompileHook(Hook):
    """Compile the backbone and neck for training when the config says
    ``compile=True`` (or ``compile=dict(...)``, ``torch.compile``'s arguments;
    ``dynamic`` is taken as ``False``), in place of mmengine's compiled
    ``train_step``. Nothing happens without ``compile``.

    Args:
        max_sizes (int): Input sizes compiled per part; past them new sizes
            run eager. Defaults to 64.
    """

    priority = 'VERY_LOW'

    def __init__(self, max_sizes: int = 64):
        if not isinstance(max_sizes, int) or isinstance(max_sizes, bool) or max_sizes < 1:
            raise ConfigError(f'CompileHook: max_sizes must be a positive integer, '
                              f'got {max_sizes!r}')
        self.max_sizes = max_sizes

    def before_train(self, runner) -> None:
        options = compile_options(runner.cfg.get('compile'))
        if options is None:
            return
        if options.pop('dynamic', None):
            print_log('compile: dynamic=True is taken as False (one graph per '
                      'input size; see docs/export.md)', logger='current')
        # mmengine compiled the whole train_step as an attribute of the
        # model (or of its DDP wrapper): back to the class's own
        vars(runner.model).pop('train_step', None)
        parts = feature_parts(unwrapped_model(runner))
        for part in parts.values():
            compile_for_training(part, options, self.max_sizes)
        print_log(f'compile: {" and ".join(parts)} compiled for training, one graph '
                  f'per input size (train_step, heads and optimizer step eager)',
                  logger='current')
