# Copyright (c) mmvit3 authors. All rights reserved.
"""Fused, memory-lean implementations behind the model's plain modules.

:mod:`.dispatch` is the one switch (``impl='auto' | 'plain' | 'fused'``);
the kernels are custom ops ``torch.ops.mmvit3.*`` with registered gradients
(:mod:`.ttt_fused`, :mod:`.mlp_fused`, :mod:`.dwconv`, :mod:`.conv_cpu`), and
:mod:`.blocks` puts them together into the fused forwards of the block, the
stem and the patch merging.
"""
from . import dispatch

__all__ = ['dispatch']
