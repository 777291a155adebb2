# Copyright (c) mmvit3 authors. All rights reserved.
"""``tools/image_demo.py``: draw the predictions of a ViT3 detector
(MMDetection) or segmentor (MMSegmentation) on images, through the library's
own inferencer (DetInferencer / MMSegInferencer); the config's
``default_scope`` decides which."""
import argparse
import os.path as osp
from typing import Optional, Sequence

from ..apis import IMAGE_SUFFIXES, build_inferencer, demo_outputs, list_images, run_inferencer
from ..config import config_scope, load_config
from ..datasets import refuse_dataset_outputs
from ..errors import CheckpointNotFoundError, ConfigError
from ..safe_load import trust_checkpoints
from ..tuning import apply_overrides
from .common import add_config_args, tool_main, wants_trust

TOOL = 'tools/image_demo.py'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Draw the predictions of a ViT3 detector (mmdet) or '
        'segmentor (mmseg) on images')
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='outputs',
                        help='output folder (default: outputs)')
    parser.add_argument('--save-preds', action='store_true',
                        help='also save the predictions (JSON / label PNGs)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu or cuda:0')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw instances scoring at least this')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation: opacity of the label map')
    parser.add_argument('--amp', action='store_true',
                        help='bfloat16 autocast of the backbone and neck (heads in '
                        'float32); pays on CPUs with avx512_bf16 or AMX')
    parser.add_argument('--overwrite', action='store_true',
                        help="write into --out-dir even where it is, holds or lies "
                        "inside the config's dataset images or labels (refused "
                        'otherwise); never over an input image')
    add_config_args(parser)
    return parser


@tool_main(TOOL)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    scope = config_scope(cfg, TOOL)
    images = list_images(args.inputs)
    if not images:
        raise ConfigError(f'No images found at {args.inputs!r}: give an image file or a '
                          f'folder holding {"/".join(IMAGE_SUFFIXES)} files.')
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise CheckpointNotFoundError(f'Checkpoint not found: {args.checkpoint}')
    outputs = demo_outputs(images, args.out_dir, scope, args.save_preds)
    apply_overrides()  # MMVIT3_TUNING, as tools/train.py and test.py take it
    if not args.overwrite:
        refuse_dataset_outputs(cfg, [('--out-dir', args.out_dir)])
    with trust_checkpoints(wants_trust(args, cfg)):
        inferencer = build_inferencer(cfg, args.checkpoint, scope, args.device)
    run_inferencer(inferencer, images, args.out_dir, scope, args.save_preds,
                   args.score_thr, args.opacity, amp=args.amp)
    pictures = [paths[0] for paths in outputs.values()]
    where = pictures[0] if len(pictures) == 1 else osp.join(args.out_dir, 'vis', '')
    print(f'Saved {len(pictures)} picture{"s" * (len(pictures) > 1)} of the '
          f'predictions to {where}' +
          (f' and the predictions to {osp.join(args.out_dir, "preds", "")}'
           if args.save_preds else ''))
    return 0
