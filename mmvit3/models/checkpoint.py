# Copyright (c) mmvit3 authors. All rights reserved.
"""Turning the authors' released files into ViT3 backbone weights.

:func:`checkpoint_filter_fn` is one pure function: it picks the weights out of
any released layout (ImageNet classification ``.pth`` with ``'model'`` /
``'state_dict_ema'``, mmengine detection / segmentation checkpoints with
``'state_dict'`` and ``backbone.`` keys, or a plain backbone state dict),
drops what dense prediction does not use and says what it dropped, and
refuses a checkpoint that does not fit the model.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Pattern, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..safe_load import check_finite_weights, load_checkpoint_file
from .rope import ROPE_TABLE_KEY, ROPE_TABLE_REASON
from .vit3 import ViT3

#: Entries of released files that a ViT3 backbone does not use, and why.
_DROP_RULES = (
    ('classifier head', re.compile(r'^head\.')),
    ('classifier BatchNorm1d', re.compile(r'^norm\.')),
    (ROPE_TABLE_REASON, ROPE_TABLE_KEY),
)
_OUTPUT_NORM = re.compile(r'^norm\d+\.')
_MAX_LISTED = 8


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the ViT3 model it is loaded into."""


@dataclass
class FilterReport:
    """What :func:`checkpoint_filter_fn` did.

    Attributes:
        source_key (str | None): The entry of the file the weights came from.
        dropped (dict): Reason -> names of the entries dropped for it.
        untouched (list): Model entries the file lacks and that keep their
            initial values (the output norms ``norm0``... of a
            classification checkpoint).
    """
    source_key: Optional[str] = None
    dropped: Dict[str, List[str]] = field(default_factory=dict)
    untouched: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        for reason, names in self.dropped.items():
            lines.append(f'dropped {len(names)} entries ({reason}): '
                         f'{", ".join(names)}')
        if self.untouched:
            lines.append(f'left {len(self.untouched)} entries untouched (not in '
                         f'the file, keep their initial values): '
                         f'{", ".join(self.untouched)}')
        return '\n'.join(lines)


def _names(keys, limit: int = _MAX_LISTED) -> str:
    keys = list(keys)
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def select_state_dict(checkpoint: Any,
                      key: Optional[str] = None) -> Tuple[Mapping[str, Any], Optional[str]]:
    """Pick the weights out of a loaded checkpoint.

    Args:
        checkpoint: What ``torch.load`` returned.
        key (str, optional): The entry to use (``'model'``,
            ``'state_dict_ema'``, ``'state_dict'``...). Defaults to the first of
            ``'model'``, ``'state_dict'`` present, else the checkpoint itself.

    Returns:
        tuple: The state dict and the key it came from (None for the whole
        checkpoint).
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(
            f'Expected a checkpoint dict, got {type(checkpoint).__name__}')
    if key is not None:
        if key not in checkpoint:
            raise KeyError(f'Checkpoint has no entry {key!r}; its entries are '
                           f'{sorted(map(str, checkpoint))}')
        return checkpoint[key], key
    for candidate in ('model', 'state_dict'):
        if candidate in checkpoint:
            return checkpoint[candidate], candidate
    if not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointMismatchError(
            f"Checkpoint has neither 'model' nor 'state_dict' and is no state "
            f'dict; its entries are {sorted(map(str, checkpoint))}: pass key=...')
    return checkpoint, None


def _unwrapped_tensors(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The tensor entries of a state dict, without DDP's ``'module.'`` prefix
    when every one has it."""
    state = {k: v for k, v in state_dict.items()
             if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def infer_arch(state_dict: Mapping[str, Any]) -> Optional[dict]:
    """Widths and depths of the ViT3 a state dict belongs to, or None."""
    depths: Dict[int, int] = {}
    dims: Dict[int, int] = {}
    for name, value in state_dict.items():
        m = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.norm1\.weight$', name)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
            dims[stage] = int(value.shape[0])
    if not depths or sorted(depths) != list(range(len(depths))):
        return None
    return {'embed_dims': [dims[i] for i in sorted(dims)],
            'depths': [depths[i] for i in sorted(depths)]}


def arch_name(arch: Optional[dict]) -> str:
    """``'tiny'``, ``'small'``, ``'base'`` or the dict itself as text."""
    for name in ('tiny', 'small', 'base'):
        if arch == ViT3.arch_zoo[name]:
            return name
    return str(arch)


@dataclass(frozen=True)
class BackboneLayout:
    """How one backbone class's files are read and its mismatches named.

    Attributes:
        name (str): The class, in messages (``'ViT3'``).
        kind (str): What a file holds, in messages (``'ViT3'``).
        marker (str): The entries that identify such a file, in messages.
        drop_rules (tuple): ``(reason, pattern)`` of file entries the model
            may lack (dropped and reported), the first match giving the
            reason.
        infer_arch (callable): State dict -> its arch dict, or None.
        arch_name (callable): Arch dict -> ``'tiny'``... or its text.
    """
    name: str
    kind: str
    marker: str
    drop_rules: Tuple[Tuple[str, Pattern], ...]
    infer_arch: Callable[[Mapping[str, Any]], Optional[dict]]
    arch_name: Callable[[Optional[dict]], str]

    def holds(self, arch: Optional[dict]) -> str:
        """``'a ViT3 tiny'``, or ``'no ViT3 (no ... entries)'`` for None."""
        if arch is None:
            return f'no {self.kind} (no {self.marker} entries)'
        return f'a {self.kind} {self.arch_name(arch)}'


VIT3_LAYOUT = BackboneLayout(
    name='ViT3', kind='ViT3', marker='layers.<i>.blocks.<j>',
    drop_rules=_DROP_RULES + (('output norms of stages not in out_indices', _OUTPUT_NORM), ),
    infer_arch=infer_arch, arch_name=arch_name)


def backbone_layouts() -> Tuple[Tuple[type, BackboneLayout], ...]:
    """``(backbone class, its layout)`` for every backbone of the project."""
    from .plain_checkpoint import PLAIN_LAYOUT
    from .vit3_plain import PlainViT3
    return ((ViT3, VIT3_LAYOUT), (PlainViT3, PLAIN_LAYOUT))


def layout_of(backbone: Any) -> Optional[BackboneLayout]:
    """The layout of ``backbone``'s class, or None for another backbone."""
    return next((layout for cls, layout in backbone_layouts()
                 if isinstance(backbone, cls)), None)


def filter_state_dict(checkpoint: Any,
                      model: nn.Module,
                      layout: BackboneLayout,
                      key: Optional[str] = None,
                      prefix: Optional[str] = None
                      ) -> Tuple[Dict[str, torch.Tensor], FilterReport]:
    """Turn a checkpoint into a state dict for the backbone ``model`` whose
    files ``layout`` describes.

    Pure: neither the checkpoint nor the model is changed.

    Steps: pick the weights (:func:`select_state_dict`); keep only the keys
    under ``prefix`` (given, or ``'backbone.'`` when the file is a whole
    detector / segmentor) and strip it, as well as a DDP ``'module.'``; drop
    the entries the model lacks that ``layout.drop_rules`` name (classifier
    parts, tables, output norms of stages or blocks the model does not
    output); then check that every remaining entry exists in the model with
    the same shape. Output norms ``norm<i>`` the file lacks keep their
    initial values (reported as untouched).

    Raises:
        CheckpointMismatchError: Entries the model lacks, lacks in the file
            or holds with other shapes (the first ones are named, and what
            the file and the model are when their archs differ).
    """
    state_dict, source_key = select_state_dict(checkpoint, key)
    report = FilterReport(source_key=source_key)
    state = _unwrapped_tensors(state_dict)
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        outside = sorted(k for k in state if not k.startswith(prefix))
        if outside:
            report.dropped[f'outside {prefix!r}'] = outside
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointMismatchError(f'Checkpoint has no entries under {prefix!r}')

    model_state = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    for name in sorted(state):
        if name not in model_state:
            reason = next((r for r, pattern in layout.drop_rules if pattern.search(name)),
                          None)
            if reason is not None:
                report.dropped.setdefault(reason, []).append(name)
                continue
        out[name] = state[name]

    unexpected = [k for k in out if k not in model_state]
    mismatched = [f'{k}: file {tuple(out[k].shape)}, model {tuple(model_state[k].shape)}'
                  for k in out if k in model_state and out[k].shape != model_state[k].shape]
    absent = [k for k in model_state if k not in out]
    report.untouched = [k for k in absent if _OUTPUT_NORM.match(k)]
    missing = [k for k in absent if k not in report.untouched
               and not k.endswith('num_batches_tracked')]
    if unexpected or mismatched or missing:
        file_arch, model_arch = layout.infer_arch(state), layout.infer_arch(model_state)
        problems = []
        if file_arch != model_arch:
            problems.append(f'the file holds {layout.holds(file_arch)}, the model is '
                            f'{layout.holds(model_arch)}: set arch to match the checkpoint')
        if mismatched:
            problems.append(f'{len(mismatched)} shape mismatches: {_names(mismatched)}')
        if unexpected:
            problems.append(f'{len(unexpected)} entries the model lacks: '
                            f'{_names(unexpected)}')
        if missing:
            problems.append(f'{len(missing)} model entries the file lacks: '
                            f'{_names(missing)}')
        raise CheckpointMismatchError(f'Checkpoint does not fit this {layout.name} backbone; '
                                      + '; '.join(problems))
    return out, report


def checkpoint_filter_fn(checkpoint: Any,
                         model: nn.Module,
                         key: Optional[str] = None,
                         prefix: Optional[str] = None
                         ) -> Tuple[Dict[str, torch.Tensor], FilterReport]:
    """Turn a released checkpoint into a state dict for the ViT3 ``model``:
    :func:`filter_state_dict` dropping the classifier head, its BatchNorm1d
    ``norm`` and the RoPE tables, and the output norms of stages the model
    does not output.

    Args:
        checkpoint: What ``torch.load`` returned.
        model (nn.Module): The ViT3 backbone the weights are for.
        key (str, optional): See :func:`select_state_dict`.
        prefix (str, optional): Take only the keys under this prefix.

    Returns:
        tuple[dict, FilterReport]: The state dict to load and the report.

    Raises:
        CheckpointMismatchError: Entries the model lacks, lacks in the file
            or holds with other shapes (the first ones are named).
    """
    return filter_state_dict(checkpoint, model, VIT3_LAYOUT, key, prefix)


def _modules_of(keys) -> Dict[str, int]:
    """Top-level module name -> number of entries, of state-dict keys."""
    found: Dict[str, int] = {}
    for k in keys:
        top = k.split('.', 1)[0]
        found[top] = found.get(top, 0) + 1
    return found


def check_whole_model_fit(model: nn.Module, checkpoint: Any,
                          strict: bool = True, checked: Tuple[str, ...] = ()) -> None:
    """Refuse a whole-model checkpoint made for another model: one without
    weights for a part of the model (a detection checkpoint in a
    segmentation config has no ``decode_head``; a segmentation one has no
    ``rpn_head`` / ``roi_head``), or, with ``strict`` (evaluation,
    ``resume``), one whose entries or shapes differ from the model's (another
    head layout, number of classes or arch). Without ``strict`` (``load_from``
    to fine-tune) heads of other shapes are left to mmengine, which skips
    them with a warning.

    Pure. Does nothing for a checkpoint that shares no top-level module with
    the model (a backbone alone: see :func:`check_model_checkpoint`). Parts
    named in ``checked`` (a ViT3 ``backbone``, whose released files carry
    tables it drops) are compared by their presence only.

    Raises:
        CheckpointMismatchError: Naming the parts or first entries that differ.
    """
    try:
        state = _unwrapped_tensors(select_state_dict(checkpoint)[0])
    except CheckpointMismatchError:
        return
    model_state = {k: v for k, v in model.state_dict().items()
                   if not k.endswith('num_batches_tracked')}
    state = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
    ours, theirs = _modules_of(model_state), _modules_of(state)
    if not set(ours) & set(theirs):
        return
    lacking = [m for m in ours if m not in theirs]
    extra = [m for m in theirs if m not in ours]
    hint = ('To take only its backbone, load it through the backbone: '
            "model.backbone.init_cfg=dict(type='Pretrained', "
            "checkpoint=..., prefix='backbone.').")
    if lacking:
        raise CheckpointMismatchError(
            f'The checkpoint is for another model (another task or head '
            f'layout): it has no weights for {", ".join(lacking)} of this '
            f'model' + (f', and holds {", ".join(extra)}, which this model '
                        f'lacks' if extra else '') +
            f' (model parts: {", ".join(ours)}; checkpoint parts: '
            f'{", ".join(theirs)}). {hint}')
    if not strict:
        return
    model_state = {k: v for k, v in model_state.items()
                   if k.split('.', 1)[0] not in checked}
    missing = [k for k in model_state if k not in state]
    # whole parts the model does not have (an auxiliary head left out of a
    # test config) are harmless; unknown entries inside its parts are not
    unexpected = [k for k in state if k not in model_state
                  and k.split('.', 1)[0] in ours
                  and k.split('.', 1)[0] not in checked]
    mismatched = [f'{k}: file {tuple(state[k].shape)}, model '
                  f'{tuple(model_state[k].shape)}' for k in model_state
                  if k in state and state[k].shape != model_state[k].shape]
    if missing or mismatched or unexpected:
        problems = []
        if mismatched:
            problems.append(f'{len(mismatched)} shape mismatches: {_names(mismatched)}')
        if missing:
            problems.append(f'{len(missing)} model entries the file lacks: '
                            f'{_names(missing)}')
        if unexpected:
            problems.append(f'{len(unexpected)} entries the model lacks: '
                            f'{_names(unexpected)}')
        raise CheckpointMismatchError(
            'The checkpoint does not fit this model (another head layout, '
            'number of classes or arch?): ' + '; '.join(problems) +
            '. Use it with the config it was trained with.')


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
    state = _unwrapped_tensors(state_dict)
    if not state:
        raise CheckpointMismatchError(
            f'The checkpoint holds no weights (its entries: '
            f'{_names(sorted(map(str, checkpoint)))})')
    ours = _modules_of(k for k in model.state_dict())
    if not set(ours) & set(_modules_of(state)):
        if backbone_alone(state) is not None:
            return  # check_model_checkpoint says where it goes
        raise CheckpointMismatchError(
            f'None of the checkpoint\'s {len(state)} weights belongs to this '
            f'model (its entries: {_names(sorted(state))}; the model\'s parts: '
            f'{", ".join(ours)}): nothing would be loaded. For a backbone '
            f"alone use model.backbone.init_cfg=dict(type='Pretrained', "
            f'checkpoint=...).')


def backbone_alone(state: Mapping[str, Any]) -> Optional[BackboneLayout]:
    """The layout of the backbone a state dict holds alone (no
    ``backbone.`` entries: an ImageNet file), or None."""
    if any(k.startswith('backbone.') for k in state):
        return None
    return next((layout for _, layout in backbone_layouts()
                 if layout.infer_arch(state) is not None), None)


def check_model_checkpoint(model: nn.Module, checkpoint: Any,
                           strict: bool = False) -> None:
    """Refuse a whole-model checkpoint (mmengine's ``load_from`` or
    ``resume``) that does not fit ``model`` instead of loading what fits and
    warning about the rest: its ``backbone.`` part must fit ``model``'s
    ViT3 or PlainViT3 backbone, and the model's other parts must be in it
    (:func:`check_whole_model_fit`; with ``strict``, entry by entry and
    shape by shape).

    Pure: neither is changed. Does nothing for a checkpoint without weights
    (mmengine's loader reports that).

    Raises:
        CheckpointMismatchError: The backbone entries have another arch,
            other shapes, or are missing; the file holds a backbone alone
            (an ImageNet file), which belongs in the backbone's
            ``init_cfg``; or the file is for another model.
    """
    try:
        unwrapped = _unwrapped_tensors(select_state_dict(checkpoint)[0])
    except CheckpointMismatchError:
        return
    alone = backbone_alone(unwrapped)
    if alone is not None:
        raise CheckpointMismatchError(
            f'The checkpoint holds a {alone.name} backbone alone (no "backbone." '
            'entries), not a whole model: load it through the backbone, '
            "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...), "
            'instead of load_from')
    backbone = getattr(model, 'backbone', None)
    layout = layout_of(backbone)
    if layout is None:
        check_whole_model_fit(model, checkpoint, strict)
    elif any(k.startswith('backbone.') for k in unwrapped):
        filter_state_dict(checkpoint, backbone, layout, prefix='backbone.')
        check_whole_model_fit(model, checkpoint, strict, checked=('backbone', ))


def load_backbone_weights(model: nn.Module,
                          checkpoint: str,
                          layout: BackboneLayout,
                          key: Optional[str] = None,
                          prefix: Optional[str] = None,
                          trusted: bool = False,
                          map_location: Any = 'cpu') -> FilterReport:
    """Load a file into the backbone ``model`` through the project's safe
    loader (:func:`filter_state_dict` with ``layout``), refusing NaN / Inf
    weights, and log what was loaded, dropped and left untouched."""
    hint = (f"If you trust this file, set trusted=True in the backbone's "
            f"init_cfg, or convert it once into a plain weights file: "
            f"python tools/convert_checkpoint.py {checkpoint} OUT.pth --trusted")
    loaded = load_checkpoint_file(checkpoint, map_location, trusted, hint)
    check_finite_weights(loaded, checkpoint)
    state_dict, report = filter_state_dict(loaded, model, layout, key, prefix)
    model.load_state_dict(state_dict, strict=False)
    source = f"entry '{report.source_key}' of " if report.source_key else ''
    print_log(f'{layout.name}: loaded {len(state_dict)} entries from {source}{checkpoint}'
              + (f'\n{report.summary()}' if report.summary() else ''),
              logger='current')
    return report


def load_pretrained(model: nn.Module,
                    checkpoint: str,
                    key: Optional[str] = None,
                    prefix: Optional[str] = None,
                    trusted: bool = False,
                    map_location: Any = 'cpu') -> FilterReport:
    """Load released weights into a ViT3 backbone and log what happened.

    This is what ``init_cfg=dict(type='Pretrained', checkpoint=..., key=...,
    prefix=..., trusted=...)`` on :class:`ViT3` runs.

    Args:
        model (nn.Module): The backbone.
        checkpoint (str): Path or URI of the file.
        key (str, optional): Entry holding the weights; see
            :func:`select_state_dict`.
        prefix (str, optional): Take only keys under this prefix.
        trusted (bool): Unpickle Python objects in the file (the authors'
            ImageNet files hold a yacs config): only for a file you trust.
            Defaults to False. ``tools/convert_checkpoint.py`` turns such a
            file into one that loads safely.
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
    """
    return load_backbone_weights(model, checkpoint, VIT3_LAYOUT, key, prefix, trusted,
                                 map_location)
