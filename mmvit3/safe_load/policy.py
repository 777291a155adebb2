# Copyright (c) mmvit3 authors. All rights reserved.
"""How the checkpoints loaded now are treated: one policy, set for a block.

mmengine's ``CheckpointLoader`` calls a scheme's loader with the file name
and ``map_location`` only, so what a run opted into reaches the loader
through one context variable. Each change (:class:`trust_checkpoints`,
:class:`allow_nonfinite_weights`, :class:`set_opt_in_hint`) holds only inside
its ``with`` block and the previous policy comes back on exit, also when the
block fails: nothing loaded afterwards is trusted by accident.
"""
import contextvars
import dataclasses
from typing import Any, Optional

from ..config.keys import strict_bool

#: The opt-in of the project's tools/train.py and tools/test.py.
TOOLS_HINT = ('If you trust this file, pass --trust-checkpoint to '
              'tools/train.py or tools/test.py (or set trust_checkpoint = '
              'True in the config).')
DEFAULT_HINT = ('If you trust this file, pass --trust-checkpoint to mmvit3\'s '
                'tools/train.py or tools/test.py; with other tools, set '
                'trust_checkpoint = True in a config whose custom_hooks have '
                'mmvit3\'s CheckpointSafetyHook (configs inheriting '
                'configs/_base_/mmvit3_runtime.py do).')
CONFIG_HINT = ('If you trust this file, set trust_checkpoint = True in the '
               'config (e.g. --cfg-options trust_checkpoint=True; it takes '
               'effect through mmvit3\'s CheckpointSafetyHook, which '
               'configs/_base_/mmvit3_runtime.py adds to custom_hooks).')
NONFINITE_OPT_OUT = ('allow_nonfinite_weights = True in the config (e.g. '
                     '--cfg-options allow_nonfinite_weights=True)')


@dataclasses.dataclass(frozen=True)
class LoadPolicy:
    """How the checkpoints loaded now are treated.

    Attributes:
        trusted (bool): Unpickle every file in full (and read a config
            stored in it as code).
        allow_nonfinite (bool): Load weights that hold NaN / Inf.
        opt_in_hint (str, optional): How the user in front of the tool in
            use opts in, for refusals; None: :data:`DEFAULT_HINT`.
    """
    trusted: bool = False
    allow_nonfinite: bool = False
    opt_in_hint: Optional[str] = None

    @property
    def opt_in_sentence(self) -> str:
        """The opt-in sentence refusals carry."""
        return self.opt_in_hint or DEFAULT_HINT


_POLICY: contextvars.ContextVar = contextvars.ContextVar('mmvit3_load_policy',
                                                         default=LoadPolicy())


def load_policy() -> LoadPolicy:
    """The policy in force now."""
    return _POLICY.get()


class _PolicyChange:
    """A change of the policy that holds inside its ``with`` block only."""

    def __init__(self, **changes) -> None:
        self._changes = changes
        self._previous = []

    def __enter__(self):
        self._previous.append(_POLICY.get())
        _POLICY.set(dataclasses.replace(self._previous[-1], **self._changes))
        return self

    def __exit__(self, *exc_info) -> None:
        _POLICY.set(self._previous.pop())


class trust_checkpoints(_PolicyChange):  # noqa: N801  (used like a function)
    """Inside the block, fully unpickle the checkpoints loaded (only for
    files you trust: unpickling can run code from the file)::

        with trust_checkpoints(args.trust_checkpoint):
            runner.train()

    Args:
        enabled (bool): Trust the files loaded. Defaults to True.
    """

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(trusted=strict_bool(enabled, 'trust_checkpoints(enabled)'))


class allow_nonfinite_weights(_PolicyChange):  # noqa: N801  (used like a function)
    """Inside the block, load checkpoints with NaN / Inf weights without an
    error (:func:`~mmvit3.safe_load.check_finite_weights` is off)."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(allow_nonfinite=strict_bool(enabled, 'allow_nonfinite_weights'))


class set_opt_in_hint(_PolicyChange):  # noqa: N801  (used like a function)
    """Inside the block, refusals name ``hint`` as the way to opt in (None:
    :data:`DEFAULT_HINT`, which names the project's tools)."""

    def __init__(self, hint: Optional[str]) -> None:
        super().__init__(opt_in_hint=hint)
