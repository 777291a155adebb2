"""Helpers shared by the tests that run the tools as a user would: tools
run as subprocesses from the repository root on a tiny demo data set (see
tests/conftest.py's ``demo_root``) with short-run config overrides."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DET_CFG = 'configs/demo/mask_rcnn_vit3_demo.py'
SEG_CFG = 'configs/demo/upernet_vit3_demo.py'
TIMEOUT = 600


def load_tool(name):
    """Import ``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        f'_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*args):
    """Run ``python ARGS...`` from the repository root; returns
    ``(returncode, stdout and stderr)``."""
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


def loader_overrides(prefix, **values):
    """``--cfg-options`` setting ``<split>_dataloader.<prefix><key>`` for the
    train, val and test loaders."""
    return [f'{split}_dataloader.{prefix}{k}={v}'
            for split in ('train', 'val', 'test') for k, v in values.items()]


def short_run_overrides():
    """Two iterations, no worker processes, light checkpoints."""
    return [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.save_optimizer=False',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
        *loader_overrides('', num_workers=0, persistent_workers=False)
    ]


def det_data_overrides(root: Path):
    """The detection demo config on the data set at ``root``, at 128 px."""
    ann = root / 'annotations' / 'instances_val.json'
    return [
        *loader_overrides('dataset.', data_root=f'{root}/'),
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        # 128 px instead of 256: four times cheaper
        'train_dataloader.dataset.pipeline.2.scale=(128,128)',
        'val_dataloader.dataset.pipeline.1.scale=(128,128)',
        'test_dataloader.dataset.pipeline.1.scale=(128,128)',
    ]


def seg_data_overrides(root: Path):
    """The segmentation demo config on the data set at ``root``."""
    return loader_overrides('dataset.', data_root=f'{root}/ade/')


def rope_tables(backbone, prefix=''):
    """The fixed 224x224 RoPE tables (``layers.i.blocks.j.attn.rope.rotations``,
    ``(56 / 2^i, 56 / 2^i, C_i / 2, 2)``) that the authors' released files
    carry for every block of a ViT3 (spec §5), filled with random values."""
    tables = {}
    for i, stage in enumerate(backbone.layers):
        side = 56 >> i
        for j, _ in enumerate(stage.blocks):
            tables[f'{prefix}layers.{i}.blocks.{j}.attn.rope.rotations'] = \
                torch.randn(side, side, backbone.embed_dims[i] // 2, 2)
    return tables
