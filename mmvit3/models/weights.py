# Copyright (c) mmvit3 authors. All rights reserved.
"""The ViT³ backbones' weights as files hold them.

One layout table per backbone (:data:`VIT3_LAYOUT`, :data:`PLAIN_LAYOUT`:
its archs, the entries released files carry that the backbone does not use,
and how its blocks are named), one arch inference (:meth:`BackboneLayout.infer_arch`,
:func:`identify`) and one filter (:func:`checkpoint_filter_fn`) that picks
the weights out of any released layout (ImageNet classification files with
``'model'`` / ``'state_dict_ema'``, mmengine detection / segmentation
checkpoints with ``'state_dict'`` and ``backbone.`` keys, or a bare state
dict), drops what dense prediction does not use, says what it dropped, and
refuses a checkpoint that does not fit the model.

Pure: nothing here reads files or changes a model, and no backbone class is
imported (each backbone names its layout as ``weights_layout``).
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Pattern, Tuple

import torch
import torch.nn as nn

from ..errors import CheckpointEntryError, CheckpointMismatchError

#: The fixed-size RoPE tables (``...attn.rope.rotations``, 224x224 grids)
#: that the authors' H-ViT³ files carry; RoPE is computed for every input
#: size, so loading drops them.
ROPE_TABLE_KEY = re.compile(r'(^|\.)rope\.rotations$')
ROPE_TABLE_REASON = 'fixed-size RoPE tables (RoPE is computed for every input size)'
#: The output norms ``norm0``, ``norm1``... of the outputs a model returns.
OUTPUT_NORM = re.compile(r'^norm\d+\.')
#: Inner weights of a block's mixer: ``layers.<i>.blocks.<j>.attn.w1``
#: (H-ViT³) or ``blocks.<j>.attn.w1`` (plain), ``(1, heads, d, d)``.
_BLOCK_W1 = re.compile(r'^(?:layers\.(\d+)\.)?blocks\.(\d+)\.attn\.w1$')
_MAX_LISTED = 8

#: H-ViT³ archs: channels and blocks per stage.
VIT3_ARCHS: Dict[str, dict] = {
    **dict.fromkeys(['t', 'tiny'], {'embed_dims': [64, 128, 320, 512], 'depths': [1, 3, 9, 4]}),
    **dict.fromkeys(['s', 'small'], {'embed_dims': [64, 128, 320, 512], 'depths': [2, 6, 18, 8]}),
    **dict.fromkeys(['b', 'base'], {'embed_dims': [96, 192, 448, 640], 'depths': [2, 6, 18, 8]}),
}
#: Plain ViT³ archs: channels, blocks and heads.
PLAIN_ARCHS: Dict[str, dict] = {
    **dict.fromkeys(['t', 'tiny'], {'embed_dims': 192, 'depth': 12, 'num_heads': 6}),
    **dict.fromkeys(['s', 'small'], {'embed_dims': 384, 'depth': 12, 'num_heads': 6}),
    **dict.fromkeys(['b', 'base'], {'embed_dims': 768, 'depth': 12, 'num_heads': 12}),
}


@dataclass(frozen=True)
class BackboneLayout:
    """How one backbone's files are named, read and described.

    Attributes:
        name (str): The backbone class, in messages (``'ViT3'``).
        kind (str): What a file holds, in messages (``'plain ViT3'``).
        marker (str): The entries that identify such a file, in messages.
        arch_zoo (dict): Arch name -> settings (``'t'`` and ``'tiny'`` alike).
        arch_keys (tuple): The keys of a custom arch dict.
        hierarchical (bool): Blocks in stages (``layers.<i>.blocks.<j>``), or
            one run of blocks (``blocks.<j>``).
        drop_rules (tuple): ``(reason, pattern)`` of file entries the model
            may lack (dropped and reported); the first match gives the reason.
    """
    name: str
    kind: str
    marker: str
    arch_zoo: Mapping[str, dict]
    arch_keys: Tuple[str, ...]
    hierarchical: bool
    drop_rules: Tuple[Tuple[str, Pattern], ...]

    def infer_arch(self, state_dict: Mapping[str, Any]) -> Optional[dict]:
        """The arch of this backbone that a state dict holds, read from its
        blocks' inner weights ``attn.w1`` ``(1, heads, d, d)``; None when it
        holds no such blocks."""
        stages: Dict[int, Dict[int, Tuple[int, int]]] = {}
        for name, value in state_dict.items():
            m = _BLOCK_W1.match(name) if isinstance(name, str) else None
            if m is None or (m.group(1) is not None) != self.hierarchical or \
                    not isinstance(value, torch.Tensor) or value.dim() != 4:
                continue
            blocks = stages.setdefault(int(m.group(1) or 0), {})
            blocks[int(m.group(2))] = (int(value.shape[1]), int(value.shape[2]))
        if not stages or sorted(stages) != list(range(len(stages))):
            return None
        widths = [heads * d for heads, d in (s[max(s)] for s in map(stages.get, sorted(stages)))]
        depths = [max(stages[i]) + 1 for i in sorted(stages)]
        if self.hierarchical:
            return {'embed_dims': widths, 'depths': depths}
        heads = stages[0][max(stages[0])][0]
        return {'embed_dims': widths[0], 'depth': depths[0], 'num_heads': heads}

    def arch_name(self, arch: Optional[dict]) -> str:
        """``'tiny'``, ``'small'``, ``'base'`` or the dict itself as text."""
        for name in ('tiny', 'small', 'base'):
            if arch == self.arch_zoo[name]:
                return name
        return str(arch)

    def holds(self, arch: Optional[dict]) -> str:
        """``'a ViT3 tiny'``, or ``'no ViT3 (no ... entries)'`` for None."""
        if arch is None:
            return f'no {self.kind} (no {self.marker} entries)'
        return f'a {self.kind} {self.arch_name(arch)}'


_CLASSIFIER_HEAD = ('classifier head', re.compile(r'^head\.'))

VIT3_LAYOUT = BackboneLayout(
    name='ViT3', kind='ViT3', marker='layers.<i>.blocks.<j>', arch_zoo=VIT3_ARCHS,
    arch_keys=('embed_dims', 'depths'), hierarchical=True,
    drop_rules=(_CLASSIFIER_HEAD,
                ('classifier BatchNorm1d', re.compile(r'^norm\.')),
                (ROPE_TABLE_REASON, ROPE_TABLE_KEY),
                ('output norms of stages not in out_indices', OUTPUT_NORM)))

PLAIN_LAYOUT = BackboneLayout(
    name='PlainViT3', kind='plain ViT3', marker='blocks.i.attn.w1', arch_zoo=PLAIN_ARCHS,
    arch_keys=('embed_dims', 'depth', 'num_heads'), hierarchical=False,
    drop_rules=(_CLASSIFIER_HEAD,
                ('final norm; the last block is not in out_indices', re.compile(r'^norm\.')),
                ('output norms of blocks not in out_indices', OUTPUT_NORM)))

#: Every backbone's layout.
LAYOUTS = (VIT3_LAYOUT, PLAIN_LAYOUT)


def identify(state_dict: Mapping[str, Any]) -> Optional[Tuple[BackboneLayout, dict]]:
    """``(layout, arch)`` of the backbone a state dict holds (its entries
    named as the backbone's own, without a ``backbone.`` prefix), or None."""
    for layout in LAYOUTS:
        arch = layout.infer_arch(state_dict)
        if arch is not None:
            return layout, arch
    return None


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


def listed(keys, limit: int = _MAX_LISTED) -> str:
    """The first ``limit`` of ``keys``, comma-separated, with how many more."""
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
            raise CheckpointEntryError(f'Checkpoint has no entry {key!r}; its entries are '
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


def unwrapped_tensors(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The tensor entries of a state dict, without DDP's ``'module.'`` prefix
    when every one has it."""
    state = {k: v for k, v in state_dict.items()
             if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def _take_prefix(state: Dict[str, torch.Tensor], prefix: Optional[str],
                 report: FilterReport) -> Dict[str, torch.Tensor]:
    """The entries under ``prefix`` (given, or ``'backbone.'`` when the file
    is a whole detector / segmentor) without it; the rest reported."""
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if not prefix:
        return state
    outside = sorted(k for k in state if not k.startswith(prefix))
    if outside:
        report.dropped[f'outside {prefix!r}'] = outside
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
        raise CheckpointMismatchError(f'Checkpoint has no entries under {prefix!r}')
    return state


def checkpoint_filter_fn(checkpoint: Any,
                         model: nn.Module,
                         key: Optional[str] = None,
                         prefix: Optional[str] = None,
                         layout: Optional[BackboneLayout] = None
                         ) -> Tuple[Dict[str, torch.Tensor], FilterReport]:
    """Turn a checkpoint into a state dict for the backbone ``model``.

    Pure: neither the checkpoint nor the model is changed.

    Steps: pick the weights (:func:`select_state_dict`); keep only the keys
    under ``prefix`` (given, or ``'backbone.'`` when the file is a whole
    detector / segmentor) and strip it, as well as a DDP ``'module.'``; drop
    the entries the model lacks that the layout's ``drop_rules`` name
    (classifier parts, RoPE tables, output norms of stages or blocks the
    model does not output); then check that every remaining entry exists in
    the model with the same shape. Output norms ``norm<i>`` the file lacks
    keep their initial values (reported as untouched).

    Args:
        checkpoint: What ``torch.load`` returned.
        model (nn.Module): The backbone the weights are for.
        key (str, optional): See :func:`select_state_dict`.
        prefix (str, optional): Take only the keys under this prefix.
        layout (BackboneLayout, optional): The model's files' layout.
            Defaults to ``model.weights_layout``.

    Returns:
        tuple[dict, FilterReport]: The state dict to load and the report.

    Raises:
        CheckpointMismatchError: Entries the model lacks, lacks in the file
            or holds with other shapes (the first ones are named, and what
            the file and the model are when their archs differ).
    """
    layout = layout or model.weights_layout
    state_dict, source_key = select_state_dict(checkpoint, key)
    report = FilterReport(source_key=source_key)
    state = _take_prefix(unwrapped_tensors(state_dict), prefix, report)

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
    report.untouched = [k for k in absent if OUTPUT_NORM.match(k)]
    missing = [k for k in absent if k not in report.untouched
               and not k.endswith('num_batches_tracked')]
    if unexpected or mismatched or missing:
        file_arch, model_arch = layout.infer_arch(state), layout.infer_arch(model_state)
        problems = []
        if file_arch != model_arch:
            problems.append(f'the file holds {layout.holds(file_arch)}, the model is '
                            f'{layout.holds(model_arch)}: set arch to match the checkpoint')
        problems += mismatch_problems(mismatched, unexpected, missing)
        raise CheckpointMismatchError(f'Checkpoint does not fit this {layout.name} backbone; '
                                      + '; '.join(problems))
    return out, report


def mismatch_problems(mismatched: List[str], unexpected: List[str],
                      missing: List[str]) -> List[str]:
    """The clauses that name a checkpoint's shape mismatches, entries the
    model lacks and model entries the file lacks (the first of each)."""
    problems = []
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatches: {listed(mismatched)}')
    if unexpected:
        problems.append(f'{len(unexpected)} entries the model lacks: {listed(unexpected)}')
    if missing:
        problems.append(f'{len(missing)} model entries the file lacks: {listed(missing)}')
    return problems
