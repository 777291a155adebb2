# Copyright (c) mmvit3 authors. All rights reserved.
"""Check a config's data before training or testing on it: paths,
annotation files entry by entry, every image against its entry (sizes and
EXIF orientation from the headers), label maps; a summary per split.
Exit status 0 without errors, 2 with errors (or warnings, with --strict)
or for a bad config.

    python tools/check_dataset.py CONFIG [--splits train val test] [--strict]
        [--cfg-options KEY=VALUE ...]
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.check_dataset import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
