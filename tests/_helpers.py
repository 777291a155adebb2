"""Shared by the tests that run the tools on a tiny demo data set: run a tool
as a user would (a subprocess from the repository root, with this checkout's
mmvit3 first on the path), and the ``--cfg-options`` that make a demo run
short and point it at a data set in a temporary folder."""
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

ROOT = Path(__file__).resolve().parents[1]
DET_CFG = 'configs/demo/mask_rcnn_vit3_demo.py'
SEG_CFG = 'configs/demo/upernet_vit3_demo.py'
TIMEOUT = 600


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_demo_data = _load_tool('make_demo_data')


def _run(*args):
    # one thread: these runs are tiny, and on a busy machine a second thread
    # mostly waits for the first
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    proc = subprocess.run([sys.executable, *map(str, args)],
                          cwd=ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=TIMEOUT)
    return proc.returncode, proc.stdout


def _loader_overrides(prefix, **values):
    return [f'{split}_dataloader.{prefix}{k}={v}'
            for split in ('train', 'val', 'test') for k, v in values.items()]


def _short_run_overrides():
    """Two iterations, no worker processes, light checkpoints."""
    return [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.save_optimizer=False',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
        *_loader_overrides('', num_workers=0, persistent_workers=False)
    ]


def _det_data_overrides(root: Path):
    ann = root / 'annotations' / 'instances_val.json'
    return [
        *_loader_overrides('dataset.', data_root=f'{root}/'),
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        # 128 px instead of 256: four times cheaper
        'train_dataloader.dataset.pipeline.2.scale=(128,128)',
        'val_dataloader.dataset.pipeline.1.scale=(128,128)',
        'test_dataloader.dataset.pipeline.1.scale=(128,128)',
    ]


def _seg_data_overrides(root: Path):
    return _loader_overrides('dataset.', data_root=f'{root}/ade/')


# --------------------------------------------------------------------------
# the demo models in-process, and a sample for each


def demo_cfg(path, **merge):
    cfg = Config.fromfile(str(ROOT / path))
    cfg.merge_from_dict(merge)
    init_default_scope(cfg.default_scope)
    return cfg


def build(cfg, what='MODELS', key='model'):
    registry = getattr(
        importlib.import_module(f'{cfg.default_scope}.registry'), what)
    return registry.build(cfg[key] if isinstance(key, str) else key)


def demo_model(cfg):
    torch.manual_seed(0)
    # as the Runner does on one process: SyncBN -> BN
    model = revert_sync_batchnorm(build(cfg))
    model.init_weights()
    return model


def det_sample(h, w, seed=0):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(seed)
    sample = DetDataSample(metainfo=dict(
        img_id=0, img_path='', img_shape=(h, w), ori_shape=(h, w),
        scale_factor=(1., 1.)))
    x0, y0, x1, y1 = w // 8, h // 6, w * 3 // 4, h * 5 // 6
    masks = np.zeros((1, h, w), np.uint8)
    masks[0, y0:y1, x0:x1] = 1
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
        labels=torch.tensor([1]),
        masks=BitmapMasks(masks, h, w))
    img = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
    return img, sample


def seg_sample(h, w, seed=0):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    rng = np.random.default_rng(seed)
    sample = SegDataSample(metainfo=dict(
        img_path='', img_shape=(h, w), ori_shape=(h, w),
        reduce_zero_label=True))
    label = rng.integers(0, 3, (1, h, w))
    label[:, :h // 3] = 255  # ignored pixels, as ADE20K's 'other'
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(label))
    img = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
    return img, sample


def finite_log_vars(log_vars):
    bad = {k: float(v) for k, v in log_vars.items()
           if not torch.isfinite(torch.as_tensor(v)).all()}
    assert not bad, bad
