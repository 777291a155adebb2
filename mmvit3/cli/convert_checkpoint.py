# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/convert_checkpoint.py``: turn a released ViT³ checkpoint into a
plain backbone weights file (tensors only, so it loads safely), through the
same weights layouts and filter as every load (:mod:`mmvit3.models.weights`)."""
import argparse
import os
import tempfile
from typing import Optional, Sequence

import torch

from ..errors import CheckpointMismatchError, NonFiniteCheckpointError, OutputError
from ..models import BACKBONES, checkpoint_filter_fn, identify, select_state_dict
from ..safe_load import (allow_nonfinite_weights, check_finite_weights, load_checkpoint_source,
                         load_policy, set_opt_in_hint, trust_checkpoints)
from .common import tool_main

TOOL = 'tools/convert_checkpoint.py'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Turn a released ViT3 checkpoint into a plain backbone weights file.')
    parser.add_argument('src', help='released checkpoint (.pth): a path or URL')
    parser.add_argument('dst', help='output file for the backbone weights')
    parser.add_argument('--key', default=None,
                        help="entry holding the weights (default: 'model', "
                        "else 'state_dict'); e.g. state_dict_ema")
    parser.add_argument('--arch', default=None,
                        help='check the weights against this arch '
                        '(tiny/small/base); default: read it from the file')
    parser.add_argument('--trusted', action='store_true',
                        help='unpickle Python objects in SRC (can run code '
                        'from the file): only for a file you trust')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace DST if it exists')
    parser.add_argument('--allow-nonfinite', action='store_true',
                        help='convert weights that hold NaN / Inf (refused '
                        'by default: they come from a run that diverged)')
    return parser


def convert(src: str, dst: str, key: Optional[str] = None, arch=None, trusted: bool = False,
            overwrite: bool = False, allow_nonfinite: bool = False) -> str:
    """Convert ``src`` (a path or URL, loaded as the backbone's init_cfg
    loads it) into a weights-only backbone file at ``dst`` (the backbone and
    its arch read from the file, or checked against ``arch``); returns the
    report text.

    Raises:
        OutputError: ``dst`` is ``src``, or exists without ``overwrite``.
        CheckpointMismatchError: The file holds no ViT3 / PlainViT3
            backbone, or not one of ``arch``.
    """
    if os.path.exists(src) and os.path.realpath(src) == os.path.realpath(dst):
        raise OutputError(f'{dst} is the file being converted: write the '
                          f'output elsewhere (the input is kept)')
    if os.path.exists(dst) and not overwrite:
        raise OutputError(f'{dst} exists; pass --overwrite to replace it')
    # NaN / Inf are named below, with this tool's opt-out
    with trust_checkpoints(trusted or load_policy().trusted), allow_nonfinite_weights(), \
            set_opt_in_hint('If you trust this file, run again with --trusted.'):
        checkpoint = load_checkpoint_source(src)
    if not allow_nonfinite:
        try:
            check_finite_weights(checkpoint, src)
        except NonFiniteCheckpointError as err:
            raise NonFiniteCheckpointError(
                str(err).split(' To load it anyway')[0] +
                ' To convert it anyway, pass --allow-nonfinite.') from None
    state_dict, _ = select_state_dict(checkpoint, key)
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith('backbone.') for k in tensors):
        tensors = {k[len('backbone.'):]: v for k, v in tensors.items()
                   if k.startswith('backbone.')}
    found = identify(tensors)
    if found is None:
        raise CheckpointMismatchError(
            f'{src} holds no ViT3 backbone weights (no '
            f"'layers.<i>.blocks.<j>' or 'blocks.<i>.attn.w1' entries)")
    layout, file_arch = found
    # a plain model keeps its final norm: it serves the last block's output
    model = BACKBONES[layout.name](arch=arch or file_arch)
    weights, report = checkpoint_filter_fn(checkpoint, model, key)
    meta = {'arch': layout.arch_name(layout.infer_arch(weights)),
            'model': layout.name, 'source': os.path.basename(src),
            'source_key': report.source_key or ''}

    # write next to dst, then rename: an interrupted run never leaves a
    # truncated file behind nor clobbers anything
    out_dir = os.path.dirname(os.path.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix='.tmp')
    os.close(fd)
    try:
        torch.save({'state_dict': weights, 'meta': meta}, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    lines = [f'Wrote {len(weights)} backbone entries of a {meta["model"]} {meta["arch"]} '
             f'from {src} (entry {report.source_key!r}) to {dst}']
    if report.summary():
        lines.append(report.summary())
    return '\n'.join(lines)


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    print(convert(args.src, args.dst, args.key, args.arch, args.trusted, args.overwrite,
                  args.allow_nonfinite))
    return 0
