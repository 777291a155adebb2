# Copyright (c) mmvit3 authors. All rights reserved.
"""Draw the predictions of a ViT3 detector (MMDetection) or segmentor
(MMSegmentation) on images, through the library's own inferencer
(DetInferencer / MMSegInferencer); the config's ``default_scope`` decides
which.

    python tools/image_demo.py IMAGE_OR_FOLDER CONFIG CHECKPOINT
        [--out-dir DIR] [--save-preds] [--device cpu] [--score-thr 0.3]
        [--opacity 0.5] [--trust-checkpoint] [--cfg-options KEY=VALUE ...]

Pictures go to ``DIR/vis/<image name>`` (default DIR ``outputs``); with
``--save-preds`` also the predictions to ``DIR/preds/``: detection as
``<image stem>.json`` (boxes, labels, scores, RLE masks), segmentation as
``<image stem>.png`` label maps. A checkpoint that does not fit the config
(another arch or task), a refused file or an output that would replace an
input image is a message and exit status 2.
"""
import argparse
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmvit3  # noqa: E402,F401  (registers ViT3 in mmdet / mmseg)
from mmengine.config import DictAction  # noqa: E402

from mmvit3.apis import (IMAGE_SUFFIXES, OutputOverwritesInputError,  # noqa: E402
                         build_inferencer, demo_outputs, list_images,
                         run_inferencer)
from mmvit3.models.checkpoint import CheckpointMismatchError  # noqa: E402
from mmvit3.utils.tools import config_scope, load_config  # noqa: E402

TOOL = 'tools/image_demo.py'


def parse_args(argv=None):
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
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='fully unpickle the checkpoint (can run code '
                        'from the file): only for files you trust')
    return parser.parse_args(argv)


def fail(message: str) -> int:
    print(f'{TOOL}: {message}', file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    try:
        scope = config_scope(cfg, TOOL)
    except ValueError as err:
        return fail(str(err))
    images = list_images(args.inputs)
    if not images:
        return fail(f'No images found at {args.inputs!r}: give an image file '
                    f'or a folder holding {"/".join(IMAGE_SUFFIXES)} files.')
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        return fail(f'Checkpoint not found: {args.checkpoint}')
    try:
        outputs = demo_outputs(images, args.out_dir, scope, args.save_preds)
        with mmvit3.trust_checkpoints(args.trust_checkpoint):
            inferencer = build_inferencer(cfg, args.checkpoint, scope,
                                          args.device)
    except (OutputOverwritesInputError, CheckpointMismatchError,
            mmvit3.UnsafeCheckpointError) as err:
        return fail(str(err))
    run_inferencer(inferencer, images, args.out_dir, scope, args.save_preds,
                   args.score_thr, args.opacity)
    pictures = [paths[0] for paths in outputs.values()]
    where = pictures[0] if len(pictures) == 1 else osp.join(args.out_dir, 'vis', '')
    print(f'Saved {len(pictures)} picture{"s" * (len(pictures) > 1)} of the '
          f'predictions to {where}' +
          (f' and the predictions to {osp.join(args.out_dir, "preds", "")}'
           if args.save_preds else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
