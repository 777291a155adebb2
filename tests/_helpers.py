"""Shared by the tests that run the tools as subprocesses, from the
repository root, as a user would (each run spends a few seconds importing
mmdet / mmseg): the demo configs, short-run overrides for a tiny demo data
set (the ``demo_root`` fixture of conftest.py) and the runner."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
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


def tool_env(**extra) -> Dict[str, str]:
    """The environment of a tool subprocess: one thread (these runs are
    tiny, and on a busy machine a second thread mostly waits for the first),
    this checkout and tests/ importable (for test-only modules named in
    configs or pickled in files)."""
    path = os.pathsep.join(
        [str(ROOT), str(TESTS)] +
        [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    return {
        **os.environ,
        'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'),
        'PYTHONPATH': path,
        'PYTHONUNBUFFERED': '1',
        **extra
    }


def run_tool(*args, timeout=TIMEOUT) -> Tuple[int, str]:
    """Run ``python *args`` in the repository root; (exit status, stdout and
    stderr together)."""
    proc = subprocess.run([sys.executable, *map(str, args)],
                          cwd=ROOT,
                          env=tool_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout


def loader_overrides(prefix, **values) -> List[str]:
    return [f'{split}_dataloader.{prefix}{k}={v}'
            for split in ('train', 'val', 'test') for k, v in values.items()]


def short_run_overrides() -> List[str]:
    """Two iterations, no worker processes, light checkpoints."""
    return [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.save_optimizer=False',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
        *loader_overrides('', num_workers=0, persistent_workers=False)
    ]


def det_data_overrides(root: Path) -> List[str]:
    ann = root / 'annotations' / 'instances_val.json'
    return [
        *loader_overrides('dataset.', data_root=f'{root}/'),
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        # 128 px instead of 256: four times cheaper
        'train_dataloader.dataset.pipeline.2.scale=(128,128)',
        'val_dataloader.dataset.pipeline.1.scale=(128,128)',
        'test_dataloader.dataset.pipeline.1.scale=(128,128)',
    ]


def seg_data_overrides(root: Path) -> List[str]:
    return loader_overrides('dataset.', data_root=f'{root}/ade/')


def train_log(work_dir: Path, run: int = -1) -> List[dict]:
    """The training records (``{'step': i, 'loss': ..., 'lr': ...}``) of one
    run in ``work_dir`` (mmengine's ``<timestamp>/vis_data/scalars.json``;
    ``run`` indexes the runs by start time)."""
    runs = sorted(p for p in work_dir.iterdir()
                  if (p / 'vis_data' / 'scalars.json').is_file())
    lines = (runs[run] / 'vis_data' / 'scalars.json').read_text().splitlines()
    return [r for r in map(json.loads, lines) if 'loss' in r]


class TrainingNote:
    """A harmless object a user might keep in a checkpoint (a plain class
    from an importable module): loading it needs the opt-in."""

    def __init__(self, text: str):
        self.text = text


class Explosive:
    """Unpickling this runs a command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))
