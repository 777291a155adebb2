# Copyright (c) mmvit3 authors. All rights reserved.
"""Time the dataset check (what tools/train.py and tools/test.py run before
building, and tools/check_dataset.py) on a synthetic COCO-format set of
100k annotations over image files of known sizes, and write the figure with
the CPU to docs/benchmark_data_check.md.

    python tools/benchmark_data_check.py [--annotations 100000] [--per-image 8]
        [--work-dir DIR] [--out docs/benchmark_data_check.md]
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.benchmark_data_check import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
