#!/usr/bin/env python
"""Turn a released ViT³ checkpoint into a plain backbone weights file.

The authors' ImageNet files pickle a yacs config object beside the weights,
so safe loading (``torch.load(weights_only=True)``) refuses them. Convert a
file you trust once; the output holds tensors only and loads safely from then
on, e.g. as ``init_cfg=dict(type='Pretrained', checkpoint=OUT)``:

    python tools/convert_checkpoint.py h_vittt_tiny.pth pretrained/h_vit3_tiny.pth --trusted
    python tools/convert_checkpoint.py vittt_tiny.pth pretrained/vit3_plain_tiny.pth --trusted

It picks the weights ('model' by default; --key state_dict_ema for the EMA
weights), drops what dense prediction does not use (classifier head, its
BatchNorm1d, RoPE tables), checks that the rest fits a ViT3 backbone, or a
PlainViT3 one for the plain models' files (the arch is read from the file, or
checked against --arch) and reports all of it.
"""
import argparse
import os
import sys
import tempfile

import torch

from mmvit3 import PlainViT3, ViT3, load_checkpoint_file
from mmvit3.models.checkpoint import (arch_name, checkpoint_filter_fn,
                                      infer_arch, select_state_dict)
from mmvit3.models.plain_checkpoint import (infer_plain_arch, plain_arch_name,
                                            plain_checkpoint_filter_fn)
from mmvit3.safe_load import (CorruptCheckpointError, NonFiniteCheckpointError,
                              UnsafeCheckpointError, check_finite_weights)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='released checkpoint (.pth)')
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
    return parser.parse_args(argv)


def convert(src: str, dst: str, key=None, arch=None, trusted=False,
            overwrite=False, allow_nonfinite=False) -> str:
    """Convert ``src`` into a weights-only backbone file at ``dst``; returns
    the report text."""
    if os.path.exists(src) and os.path.realpath(src) == os.path.realpath(dst):
        raise FileExistsError(f'{dst} is the file being converted: write the '
                              f'output elsewhere (the input is kept)')
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f'{dst} exists; pass --overwrite to replace it')
    hint = ('If you trust this file, run again with --trusted.')
    checkpoint = load_checkpoint_file(src, 'cpu', trusted, opt_in_hint=hint)
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
    # a plain ViT3 file: blocks.<i>.attn.w1 and no stages
    plain = infer_arch(tensors) is None and infer_plain_arch(tensors) is not None
    if arch is None:
        arch = infer_plain_arch(tensors) if plain else infer_arch(tensors)
        if arch is None:
            raise ValueError(f'{src} holds no ViT3 backbone weights (no '
                             f"'layers.<i>.blocks.<j>' or 'blocks.<i>.attn.w1' entries)")
    if plain:  # keeps the final norm: it serves the last block's output
        model = PlainViT3(arch=arch, out_indices=(-1, ))
        weights, report = plain_checkpoint_filter_fn(checkpoint, model, key)
        name = plain_arch_name(infer_plain_arch(weights))
    else:
        model = ViT3(arch=arch)
        weights, report = checkpoint_filter_fn(checkpoint, model, key)
        name = arch_name(infer_arch(weights))
    meta = {'arch': name, 'model': type(model).__name__, 'source': os.path.basename(src),
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


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        print(convert(args.src, args.dst, args.key, args.arch, args.trusted,
                      args.overwrite, args.allow_nonfinite))
    except (UnsafeCheckpointError, CorruptCheckpointError, FileExistsError,
            FileNotFoundError,
            KeyError, ValueError, ModuleNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
