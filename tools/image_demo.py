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
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.image_demo import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
