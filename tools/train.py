# Copyright (c) mmvit3 authors. All rights reserved.
"""Train a detector (MMDetection) or a segmentor (MMSegmentation) with a ViT3
backbone; the config's ``default_scope`` decides which.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
        [--auto-scale-lr] [--tensorboard] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}] [--trust-checkpoint]

Several processes (GPUs, or CPU processes with gloo when there is no CUDA):
``tools/dist_train.sh CONFIG NPROC [args]``; Slurm:
``tools/slurm_train.sh PARTITION JOB CONFIG [args]``.
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.train import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
