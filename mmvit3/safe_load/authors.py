# Copyright (c) mmvit3 authors. All rights reserved.
"""The one object the authors' ImageNet checkpoints pickle beside tensors and
plain values: their training run's yacs config (``'config'``), a
``yacs.config.CfgNode``. A safe load allows that name, and only that name,
without yacs installed (:func:`authors_safe_globals`): the config comes back
as nested ``OrderedDict``\\ s of its values, with yacs's flags
(``__immutable__``...) as their attributes, and nothing of yacs runs.

Why an ``OrderedDict``: a ``CfgNode`` pickles as a dict subclass whose items
and then flags are filled in after it is made, and torch's weights-only
unpickler fills items into the exact types ``dict`` / ``OrderedDict`` only;
an ``OrderedDict`` also takes the flags as attributes, as yacs keeps them.
"""
from collections import OrderedDict
from typing import Callable, List, Tuple

#: The name the authors' files pickle their config under.
YACS_CFGNODE = 'yacs.config.CfgNode'


class YacsCfgNode:
    """Stands for ``yacs.config.CfgNode`` in a safe load: making one (what
    the pickle asks for) gives an empty ``OrderedDict`` that the unpickler
    then fills with the config's items and flags, all plain values."""

    def __new__(cls, *args) -> OrderedDict:  # the pickle passes no arguments
        return OrderedDict()


def authors_safe_globals() -> List[Tuple[Callable, str]]:
    """``(stand-in, name)`` for ``torch.serialization.safe_globals``: what the
    authors' ImageNet checkpoints pickle beyond tensors and plain values."""
    return [(YacsCfgNode, YACS_CFGNODE)]
