# Copyright (c) mmvit3 authors. All rights reserved.
"""TensorBoard logging as one switch (``tools/train.py --tensorboard``)."""
import importlib.util

from mmengine.config import Config


def enable_tensorboard(cfg: Config) -> Config:
    """Add mmengine's ``TensorboardVisBackend`` to ``cfg.visualizer``: losses,
    learning rates and metrics then also go to TensorBoard event files in
    ``WORK_DIR/TIMESTAMP/vis_data/``.

    Raises:
        SystemExit: The tensorboard package is missing. mmengine would only
            find out at the first log line, after the first iterations.
    """
    if importlib.util.find_spec('tensorboard') is None:
        raise SystemExit("TensorBoard logging needs the tensorboard package: "
                         "pip install tensorboard (or pip install -e '.[tensorboard]' "
                         "in the repository)")
    if cfg.get('visualizer') is None:
        raise SystemExit('TensorBoard logging needs a `visualizer` in the '
                         'config (the mmdet / mmseg default_runtime bases set one)')
    backends = cfg.visualizer.setdefault('vis_backends', [])
    if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))
    return cfg
