# Copyright (c) mmvit3 authors. All rights reserved.
"""Run a ViT3 detector (MMDetection) or segmentor (MMSegmentation) on images
and save pictures of its predictions; the config's ``default_scope`` decides
which.

    python tools/image_demo.py IMAGE_OR_FOLDER CONFIG CHECKPOINT
        [--out-dir DIR] [--device cpu] [--score-thr 0.3] [--opacity 0.5]
        [--trust-checkpoint] [--cfg-options KEY=VALUE ...]

Detection: boxes, masks, class names and scores (mmdet's DetLocalVisualizer).
Segmentation: the label map over the image with the class names written on
their regions (mmseg's SegLocalVisualizer). One picture per image, named as
the image, in ``--out-dir`` (default ``outputs/``).
"""
import argparse
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmvit3  # noqa: E402,F401  (registers ViT3 in mmdet / mmseg)
from mmengine.config import DictAction  # noqa: E402
from mmengine.utils import ProgressBar, mkdir_or_exist, scandir  # noqa: E402

from mmvit3.analysis import config_scope, load_config  # noqa: E402

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw the predictions of a ViT3 detector (mmdet) or '
        'segmentor (mmseg) on images')
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out-dir', default='outputs',
        help='folder for the pictures (default: outputs)')
    parser.add_argument(
        '--device', default='cpu', help='device, e.g. cpu or cuda:0')
    parser.add_argument(
        '--score-thr', type=float, default=0.3,
        help='detection: draw instances scoring at least this (default 0.3)')
    parser.add_argument(
        '--opacity', type=float, default=0.5,
        help='segmentation: opacity of the label map (default 0.5)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value pairs (as in '
        'tools/train.py)')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='fully unpickle the checkpoint (can run code from the file): '
        'only for files you trust')
    return parser.parse_args(argv)


def list_images(inputs: str) -> list:
    """The image files named by ``inputs`` (a file, or a folder searched
    recursively), sorted."""
    if osp.isdir(inputs):
        return [osp.join(inputs, f) for f in sorted(
            scandir(inputs, IMAGE_SUFFIXES, recursive=True, case_sensitive=False))]
    if osp.isfile(inputs):
        return [inputs]
    return []


def main(argv=None):
    args = parse_args(argv)
    if args.trust_checkpoint:
        mmvit3.trust_checkpoints()
    cfg = load_config(args.config, args.cfg_options)
    try:
        scope = config_scope(cfg)  # 'mmdet' or 'mmseg'
    except ValueError as err:
        raise SystemExit(f'tools/image_demo.py: {err}') from None
    images = list_images(args.inputs)
    if not images:
        print(f'No images found at {args.inputs!r}: give an image file or a '
              f'folder holding {"/".join(IMAGE_SUFFIXES)} files.',
              file=sys.stderr)
        return 2
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        print(f'Checkpoint not found: {args.checkpoint}', file=sys.stderr)
        return 2

    import mmcv
    if scope == 'mmdet':
        from mmdet.apis import inference_detector as inference
        from mmdet.apis import init_detector as init
        from mmdet.registry import VISUALIZERS
    else:
        from mmseg.apis import inference_model as inference
        from mmseg.apis import init_model as init
        from mmseg.registry import VISUALIZERS
    model = init(cfg, args.checkpoint, device=args.device)
    # pictures go to out_file; no storage backends (they want a save_dir)
    visualizer = VISUALIZERS.build({**model.cfg.visualizer, 'vis_backends': None})
    visualizer.dataset_meta = model.dataset_meta
    if scope == 'mmdet':
        draw_args = dict(pred_score_thr=args.score_thr)
    else:
        visualizer.alpha = args.opacity
        draw_args = dict(with_labels=True)

    mkdir_or_exist(args.out_dir)
    outputs = []
    progress = ProgressBar(len(images)) if len(images) > 1 else None
    for path in images:
        name = osp.relpath(path, args.inputs) if osp.isdir(args.inputs) \
            else osp.basename(path)
        out_file = osp.join(args.out_dir, name)
        result = inference(model, path)
        visualizer.add_datasample(
            name,
            mmcv.imread(path, channel_order='rgb'),
            data_sample=result,
            draw_gt=False,
            show=False,
            out_file=out_file,
            **draw_args)
        outputs.append(out_file)
        if progress is not None:
            progress.update()
    where = outputs[0] if len(outputs) == 1 else f'{args.out_dir}/'
    print(f'\nSaved {len(outputs)} picture{"s" * (len(outputs) > 1)} of the '
          f'predictions to {where}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
