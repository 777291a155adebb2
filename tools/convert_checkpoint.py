#!/usr/bin/env python
# Copyright (c) mmvit3 authors. All rights reserved.
"""Turn a released ViT³ checkpoint into a plain backbone weights file.

Optional, for offline use: the authors' files (their pickled yacs config
included) load safely as they are, from a path or their link. The output
holds the backbone's tensors only, to keep or copy to a machine without the
network, e.g. as ``init_cfg=dict(type='Pretrained', checkpoint=OUT)``:

    python tools/convert_checkpoint.py h_vittt_tiny.pth pretrained/h_vit3_tiny.pth
    python tools/convert_checkpoint.py vittt_tiny.pth pretrained/vit3_plain_tiny.pth

--trusted unpickles every object of a file you trust (refused otherwise).
It picks the weights ('model' by default; --key state_dict_ema for the EMA
weights), drops what dense prediction does not use (classifier head, its
BatchNorm1d, RoPE tables), checks that the rest fits a ViT3 backbone, or a
PlainViT3 one for the plain models' files (the arch is read from the file, or
checked against --arch) and reports all of it.
"""
import os.path as osp
import sys

# tools/ run as scripts: make the repository importable without installing it
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit3.cli.convert_checkpoint import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
