# Copyright (c) mmvit3 authors. All rights reserved.
"""Test (and evaluate) a ViT3 detector (MMDetection) or segmentor
(MMSegmentation); the config's ``default_scope`` decides which.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--show] [--show-dir DIR] [--wait-time S] [--tta]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
        [--trust-checkpoint]

``--out results.pkl`` dumps the predictions (detection: masks RLE-encoded,
as mmdet's DumpDetResults). For segmentation configs, ``--out DIR`` (not
ending in .pkl) writes the predicted label maps as PNGs into DIR, as mmseg's
tools/test.py does. Several processes (GPUs, or CPU processes with gloo when
there is no CUDA): ``tools/dist_test.sh CONFIG CHECKPOINT NPROC [args]``.
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.test import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
