# Copyright (c) mmvit3 authors. All rights reserved.
"""Fused, memory-lean kernels of the ViT³ model's maths, as custom ops
``torch.ops.mmvit3.*`` with shape functions and registered gradients.

Pure ops: functions of tensors that import torch and nothing else of
mmvit3. Which model module runs which op, and when, is decided beside the
models (:mod:`mmvit3.models.impl` and :mod:`mmvit3.models.fused`).

* :mod:`.ttt_fused`: the TTT mixer's inner step (``mmvit3::ttt_inner``);
* :mod:`.mlp_fused`: ``layer_norm -> linear`` and the H-ViT³ MLP's tail;
* :mod:`.dwconv`: depth-wise convolutions on channels-last maps;
* :mod:`.conv_cpu`: the dense convolutions of the stem and patch merging,
  tuned for oneDNN (CPU);
* :mod:`.linear_cpu`: the ops' float32 matrix products on CPU, through
  oneDNN or the BLAS as the CPU decides;
* :mod:`.rope`: the 2D rotary position embedding's angles.
"""
from . import conv_cpu, dwconv, linear_cpu, mlp_fused, rope, ttt_fused

__all__ = ['conv_cpu', 'dwconv', 'linear_cpu', 'mlp_fused', 'rope', 'ttt_fused']
