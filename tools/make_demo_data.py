# Copyright (c) mmvit3 authors. All rights reserved.
"""Write a small, deterministic synthetic dataset for the demo configs:
coloured shapes (circle, square, triangle) on textured backgrounds, as COCO
instances and in the ADE20K layout (see mmvit3/datasets/demo.py).

    python tools/make_demo_data.py [--out data/demo] [--seed 0]
        [--num-train 400] [--num-val 60] [--size 256]
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.make_demo_data import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
