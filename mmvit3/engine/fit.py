# Copyright (c) mmvit3 authors. All rights reserved.
"""Whether a whole-model checkpoint fits the model it is loaded into: the
one check behind ``load_from``, ``resume``, ``tools/test.py`` and the
inferencers (:class:`~mmvit3.engine.CheckpointSafetyHook`,
:mod:`mmvit3.apis`), so that a checkpoint of another arch, task, head layout
or number of classes is refused, naming what differs, instead of loading
what fits and warning about the rest.

Pure: neither the model nor the checkpoint is changed. The backbone's part
is read with its weights layout (:mod:`mmvit3.models.weights`).
"""
from typing import Any, Dict, Mapping

import torch.nn as nn

from ..errors import CheckpointMismatchError
from ..models.weights import (ROPE_TABLE_KEY, checkpoint_filter_fn, identify, listed,
                              mismatch_problems, select_state_dict, unwrapped_tensors)

_ALONE_HINT = ("load it through the backbone, model.backbone.init_cfg=dict(type='Pretrained', "
               'checkpoint=...)')


def _parts(keys) -> Dict[str, int]:
    """Top-level module name -> number of entries, of state-dict keys."""
    found: Dict[str, int] = {}
    for k in keys:
        top = k.split('.', 1)[0]
        found[top] = found.get(top, 0) + 1
    return found


def _weights(checkpoint: Any) -> Dict[str, Any]:
    """The tensors of a checkpoint's weights (``{}`` when it holds none)."""
    try:
        return unwrapped_tensors(select_state_dict(checkpoint)[0])
    except CheckpointMismatchError:
        return {}


def check_has_weights(model: nn.Module, checkpoint: Any) -> None:
    """Refuse a checkpoint that would load nothing into ``model``: no dict,
    no tensors, or none under the model's parts (mmengine would only warn
    and go on with the initial weights).

    Raises:
        CheckpointMismatchError: Saying what the file holds instead.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(
            f'The file holds a {type(checkpoint).__name__}, not a checkpoint '
            f'(a dict with a "state_dict" of weights)')
    state_dict = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            state_dict = checkpoint[key]
            break
    state = unwrapped_tensors(state_dict)
    if not state:
        raise CheckpointMismatchError(
            f'The checkpoint holds no weights (its entries: '
            f'{listed(sorted(map(str, checkpoint)))})')
    ours = _parts(model.state_dict())
    if not set(ours) & set(_parts(state)):
        if identify(state) is not None:
            return  # a backbone alone: check_model_checkpoint says where it goes
        raise CheckpointMismatchError(
            f'None of the checkpoint\'s {len(state)} weights belongs to this '
            f'model (its entries: {listed(sorted(state))}; the model\'s parts: '
            f'{", ".join(ours)}): nothing would be loaded. For a backbone '
            f"alone use model.backbone.init_cfg=dict(type='Pretrained', "
            f'checkpoint=...).')


def check_model_checkpoint(model: nn.Module, checkpoint: Any, strict: bool = False,
                           complete: bool = False) -> None:
    """Refuse a whole-model checkpoint that does not fit ``model``.

    Always: a file holding a backbone alone (an ImageNet file, which belongs
    in the backbone's ``init_cfg``); a ``backbone.`` part that does not fit a
    ViT3 / PlainViT3 backbone (another arch, shapes or missing entries,
    named through its weights layout); a model part the file has no weights
    for (a detection checkpoint in a segmentation config). With ``strict``
    (evaluation, ``resume``) also every entry of the model's parts and its
    shape; heads of other shapes are left to mmengine without it (``load_from``
    to fine-tune skips them with a warning). With ``complete`` (inference
    needs every weight) also entries of parts the model does not have.

    Does nothing for a checkpoint without weights (mmengine's loader, or
    :func:`check_has_weights`, reports that) or that shares no part with the
    model.

    Raises:
        CheckpointMismatchError: Naming the parts or first entries that differ.
    """
    state = _weights(checkpoint)
    alone = identify(state) if not any(k.startswith('backbone.') for k in state) else None
    if alone is not None:
        raise CheckpointMismatchError(
            f'The checkpoint holds a {alone[0].name} backbone alone (no "backbone." '
            f'entries), not a whole model: {_ALONE_HINT}, instead of load_from')
    layout = getattr(getattr(model, 'backbone', None), 'weights_layout', None)
    if layout is not None:
        if not any(k.startswith('backbone.') for k in state):
            return  # nothing for the backbone: check_has_weights' concern
        checkpoint_filter_fn(checkpoint, model.backbone, prefix='backbone.', layout=layout)
    model_state = {k: v for k, v in model.state_dict().items()
                   if not k.endswith('num_batches_tracked')}
    state = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
    ours, theirs = _parts(model_state), _parts(state)
    if not set(ours) & set(theirs):
        return
    lacking = [m for m in ours if m not in theirs]
    if lacking:
        extra = [m for m in theirs if m not in ours]
        raise CheckpointMismatchError(
            f'The checkpoint is for another model (another task or head '
            f'layout): it has no weights for {", ".join(lacking)} of this '
            f'model' + (f', and holds {", ".join(extra)}, which this model '
                        f'lacks' if extra else '') +
            f' (model parts: {", ".join(ours)}; checkpoint parts: '
            f'{", ".join(theirs)}). To take only its backbone, load it through the '
            f"backbone: model.backbone.init_cfg=dict(type='Pretrained', "
            f"checkpoint=..., prefix='backbone.').")
    if not (strict or complete):
        return
    # the backbone's part was compared through its layout, unless every entry counts
    skip = () if complete or layout is None else ('backbone', )
    model_state = {k: v for k, v in model_state.items() if k.split('.', 1)[0] not in skip}
    missing = [k for k in model_state if k not in state]
    # whole parts the model does not have (an auxiliary head left out of a
    # test config) are harmless unless every entry counts
    unexpected = [k for k in state if k not in model_state and k.split('.', 1)[0] not in skip
                  and (complete or k.split('.', 1)[0] in ours)
                  and not ROPE_TABLE_KEY.search(k)]
    mismatched = [f'{k}: file {tuple(state[k].shape)}, model '
                  f'{tuple(model_state[k].shape)}' for k in model_state
                  if k in state and state[k].shape != model_state[k].shape]
    if missing or mismatched or unexpected:
        raise CheckpointMismatchError(
            'The checkpoint does not fit this model (another head layout, '
            'number of classes or arch?): ' +
            '; '.join(mismatch_problems(mismatched, unexpected, missing)) +
            '. Use it with the config it was trained with (saved beside it in the work dir).')
