# Copyright (c) mmvit3 authors. All rights reserved.
"""Model-level parameters and FLOPs of MMDetection / MMSegmentation configs,
counted the way the paper's figures were.

The counts come from mmengine's jit-tracing :class:`~mmengine.analysis.FlopAnalyzer`
(one multiply-add = 1 FLOP) with its default op handles:

* counted: ``aten::linear`` / ``addmm`` / ``matmul`` / ``bmm`` / ``einsum``,
  ``aten::_convolution`` (grouped and depth-wise included), the norms and the
  resampling ops of the heads;
* not counted: element-wise ops (add, mul, activations, sigmoid, division,
  vector norms, sums), mmcv's ``RoIAlign`` and NMS.

In the TTT mixer this means: the qkv / proj linears, the inner SwiGLU's
``k @ W1``, ``k @ W2``, the two ``k^T @ (...)`` gradient products and the two
``q @ W'`` products (``aten::matmul``, ``6 B N C d`` in all) and the
per-sample 3x3 depth-wise convolution of the queries (``aten::_convolution``,
``9 B N d``) are counted; the 2D RoPE, the gates, the normalisation of the
gradients and the closed-form 3x3 window correlation ``G3`` (a multiply and a
sum in the authors' code) are not. That is what the authors' figures
include: the nine released figures are reproduced within 0.5 %
(``tests/test_configs.py``).

Under jit tracing the backbone runs its plain modules whatever its ``impl``
(:mod:`mmvit3.models.impl`), so this, mmengine's
``get_model_complexity_info`` and mmdet's / mmseg's own ``get_flops.py`` all
count the same operations.

Defaults, as the paper's figures: a detector runs in test mode
(``mode='tensor'``: backbone, neck, RPN with its proposal post-processing,
1000 proposals through the box head, the first 100 through the mask head) on
a 1x3x800x1280 image; a segmentor runs its whole-image decode forward
(``mode='tensor'``: backbone and decode head, no final resize) on 1x3x512x2048,
and its parameters exclude the auxiliary head. Nothing is read from disk but
the config: the model is built from the registry without ``init_weights`` (no
pretrained file, no dataset).
"""
import importlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings

from .config import config_scope, load_config

__all__ = ['DEFAULT_SHAPES', 'Complexity', 'analyze_config', 'analyze_model',
           'build_model', 'config_scope', 'format_count', 'load_config',
           'make_flop_analyzer']

#: Default input ``(h, w)`` per library (``mmvit3.registration.SCOPES``),
#: the sizes of the paper's figures.
DEFAULT_SHAPES: Dict[str, Tuple[int, int]] = {
    'mmdet': (800, 1280),
    'mmseg': (512, 2048),
}


def make_flop_analyzer(model: nn.Module, inputs: tuple,
                       extra_handles: Optional[dict] = None) -> FlopAnalyzer:
    """A quiet :class:`FlopAnalyzer` with the default handles and
    ``extra_handles``."""
    analyzer = FlopAnalyzer(model, inputs)
    if extra_handles:
        analyzer.set_op_handle(**extra_handles)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


@dataclass
class Complexity:
    """What :func:`analyze_config` measured.

    Attributes:
        name (str): Config name.
        scope (str): ``'mmdet'`` or ``'mmseg'``.
        shape (tuple): The input ``(h, w)``.
        params (int): Learnable parameters counted (buffers excluded).
        flops (int): FLOPs (multiply-adds) of one forward pass.
        by_module (dict): FLOPs per module name.
        by_operator (dict): FLOPs per counted operator type.
        unsupported_ops (dict): Ops met but not counted, with their counts.
    """
    name: str
    scope: str
    shape: Tuple[int, int]
    params: int
    flops: int
    by_module: Dict[str, int] = field(default_factory=dict)
    by_operator: Dict[str, int] = field(default_factory=dict)
    unsupported_ops: Dict[str, int] = field(default_factory=dict)


class _TensorForward(nn.Module):
    """Makes ``model(inputs, data_samples, mode='tensor')`` a one-input
    module that jit can trace (the data samples are fixed)."""

    def __init__(self, model: nn.Module, data_samples=None):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


def build_model(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` through its library's ``MODELS`` registry, after the
    config's ``custom_imports``. Weights stay at their construction values:
    no ``init_weights``, hence no pretrained file is read. SyncBN layers are
    turned into plain BN so that no process group is needed."""
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = config_scope(cfg)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    return revert_sync_batchnorm(registry.build(cfg.model))


def _inputs_for(model: nn.Module, scope: str,
                shape: Tuple[int, int]) -> Tuple[torch.Tensor, object]:
    h, w = shape
    inputs = torch.rand(1, 3, h, w)
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    batch_input_shape=(h, w), scale_factor=(1., 1.))
        return inputs, [DetDataSample(metainfo=meta)]
    return inputs, None


def analyze_model(model: nn.Module,
                  scope: str,
                  shape: Optional[Sequence[int]] = None,
                  name: str = '',
                  extra_handles: Optional[dict] = None,
                  seed: int = 0) -> Complexity:
    """Parameters and FLOPs of a built detector / segmentor. A segmentor's
    auxiliary head is removed from ``model`` first (the paper's figures
    exclude it).

    Args:
        model (nn.Module): An mmdet detector or an mmseg segmentor.
        scope (str): ``'mmdet'`` or ``'mmseg'``.
        shape (Sequence[int], optional): Input ``(h, w)``; defaults to
            :data:`DEFAULT_SHAPES` of the scope.
        name (str): Name to report.
        extra_handles (dict, optional): ``{op_name: handle or None}`` given
            to :meth:`FlopAnalyzer.set_op_handle` on top of the defaults.
        seed (int): Seed of the random input (and of nothing else).

    Returns:
        Complexity: The measurements.
    """
    shape = tuple(shape) if shape is not None else DEFAULT_SHAPES[scope]
    if len(shape) != 2:
        raise ValueError(f'shape must be (h, w), got {shape}')
    if scope == 'mmseg' and getattr(model, 'auxiliary_head', None) is not None:
        # UperNet figures exclude the auxiliary head (training only).
        model.auxiliary_head = None
    model.eval()
    params = parameter_count(model)['']

    torch.manual_seed(seed)
    inputs, data_samples = _inputs_for(model, scope, shape)
    wrapper = _TensorForward(model, data_samples).eval()
    # no_grad: gradient checkpointing (with_cp) is a training-time path only.
    with torch.no_grad():
        analyzer = make_flop_analyzer(wrapper, (inputs, ), extra_handles)
        flops = analyzer.total()
        # drop the wrapper: '' is the total, 'model.x' becomes 'x'
        by_module = {'': flops}
        by_module.update((k[len('model.'):], v)
                         for k, v in analyzer.by_module().items()
                         if k.startswith('model.'))
        by_operator = dict(analyzer.by_operator())
        unsupported = dict(analyzer.unsupported_ops())
    return Complexity(name=name, scope=scope, shape=shape, params=params,
                      flops=flops, by_module=by_module,
                      by_operator=by_operator, unsupported_ops=unsupported)


def analyze_config(config: Union[str, Config],
                   shape: Optional[Sequence[int]] = None,
                   cfg_options: Optional[dict] = None,
                   extra_handles: Optional[dict] = None) -> Complexity:
    """Build the model of a config and measure it with :func:`analyze_model`.

    Args:
        config (str | Config): Config file or object.
        shape (Sequence[int], optional): Input ``(h, w)``; defaults to
            :data:`DEFAULT_SHAPES` of the config's scope.
        cfg_options (dict, optional): Overrides merged into the config.
        extra_handles (dict, optional): Extra FlopAnalyzer op handles.
    """
    cfg = load_config(config, cfg_options)
    model = build_model(cfg)
    name = cfg.filename or ''
    return analyze_model(model, config_scope(cfg), shape, name=name,
                         extra_handles=extra_handles)


def format_count(x: Union[int, float], unit: str = '') -> str:
    """``48_358_992 -> '48.36M'``, ``270_526_704_640 -> '270.53G'``."""
    for div, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(x) >= div:
            return f'{x / div:.2f}{suffix}{unit}'
    return f'{x}{unit}'
