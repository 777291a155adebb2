"""Shared by the tests that run the tools as subprocesses, from the
repository root, as a user would (each run spends a few seconds importing
mmdet / mmseg): the demo configs, short-run overrides for a tiny demo data
set (the ``demo_root`` fixture of conftest.py) and the runner; and by the
tests that build the demo models in-process, with a sample for each."""
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from unittest import mock

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
DET_CFG = 'configs/demo/mask_rcnn_vit3_demo.py'
SEG_CFG = 'configs/demo/upernet_vit3_demo.py'
TIMEOUT = 600


from mmvit3.datasets import demo as make_demo_data  # noqa: E402  (the demo data set)


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


_SERVER = {}


def _tool_server() -> subprocess.Popen:
    """The process that runs the tools (tests/_tool_server.py), started on
    first use; it imports the libraries once, each run forks from it."""
    proc = _SERVER.get('proc')
    if proc is None or proc.poll() is not None:
        proc = subprocess.Popen([sys.executable, str(TESTS / '_tool_server.py')], cwd=ROOT,
                                env=tool_env(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert json.loads(proc.stdout.readline()).get('ready'), 'the tool server did not start'
        _SERVER['proc'] = proc
        _SERVER['dir'] = tempfile.mkdtemp(prefix='mmvit3_tool_runs_')
    return proc


def run_tool(*args, timeout=TIMEOUT, env=None, cwd=ROOT) -> Tuple[int, str]:
    """Run ``python *args`` in ``cwd`` (the repository root) with the tool
    environment and ``env`` added; (exit status, stdout and stderr
    together). Runs fork from a process that imported the libraries once
    (tests/_tool_server.py): the same as a new process for the tools, without
    the seconds of imports."""
    if str(args[0]).startswith('-'):  # python -c / -m: a process of its own
        proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd,
                              env=tool_env(**(env or {})), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return proc.returncode, proc.stdout
    server = _tool_server()
    out = os.path.join(_SERVER['dir'], 'run.log')
    request = dict(argv=[str(a) for a in args], cwd=str(cwd), env=tool_env(**(env or {})),
                   out=out, timeout=timeout)
    server.stdin.write(json.dumps(request) + '\n')
    server.stdin.flush()
    reply = json.loads(server.stdout.readline())
    with open(out, errors='replace') as f:
        output = f.read()
    if reply['timeout']:
        raise subprocess.TimeoutExpired([sys.executable, *request['argv']], timeout, output)
    return reply['rc'], output


#: The pages whose shell blocks tests run (tests/test_readme.py).
PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))


def page_commands() -> List[str]:
    """The commands of the ```bash blocks of PAGES, one a line: ``\\``
    continuations joined, comments and repeated spaces dropped."""
    commands = []
    for page in PAGES:
        for block in re.findall(r'```bash\n(.*?)```', page.read_text(), re.S):
            for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
                line = re.sub(r'\s+', ' ', line.split('#')[0]).strip()
                if line and line not in commands:
                    commands.append(line)
    return commands


def page_command(pattern: str, swap: Optional[Dict[str, object]] = None) -> List[str]:
    """The argv of the one page command that ``pattern`` matches (from its
    start; tests/test_readme.py checks that each command is some test's),
    without a leading ``python``, so that a test runs what the page says.
    ``swap``: {regex: value} for paths of the page (a checkpoint, a work dir,
    data/demo) that the test has elsewhere: each token becomes the value of
    the first regex that fully matches it (``\\1`` its group); each regex
    must match a token."""
    found = [c for c in page_commands() if re.match(pattern, c)]
    assert len(found) == 1, f'{pattern!r} matches {len(found)} commands of the pages: {found}'
    argv, used = [], set()
    for arg in shlex.split(found[0]):
        match = next(((r, m) for r in swap or {} for m in [re.fullmatch(r, arg)] if m),
                     None)
        if match:
            used.add(match[0])
            arg = match[1].expand(str(swap[match[0]]))
        argv.append(arg)
    assert used == set(swap or {}), f'{set(swap) - used}: no such argument in {found[0]!r}'
    return argv[1:] if argv[0] == 'python' else argv


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


# --------------------------------------------------------------------------
# the authors' ImageNet files, in their exact format, without yacs


class AuthorsCfgNode(dict):
    """A yacs ``CfgNode`` as it pickles: a dict of values (nested nodes for
    sections), yacs's flags in its ``__dict__``, named as yacs names it, so
    that a file saved with it (save_authors_file) holds the same pickle
    opcodes and names as the authors'."""

    def __init__(self, values=None, frozen=True):
        super().__init__()
        for key, value in (values or {}).items():
            self[key] = AuthorsCfgNode(value, frozen) if isinstance(value, dict) else value
        self.__dict__.update({'__immutable__': frozen, '__deprecated_keys__': set(),
                              '__renamed_keys__': {}, '__new_allowed__': False})


AuthorsCfgNode.__module__, AuthorsCfgNode.__qualname__ = 'yacs.config', 'CfgNode'
AuthorsCfgNode.__name__ = 'CfgNode'


def authors_config(model_type: str) -> AuthorsCfgNode:
    """A frozen config with the kinds of values the authors' training run
    keeps (sections, a list, a tuple, None, bools, ints, floats, strings)."""
    return AuthorsCfgNode({
        'BASE': [''],
        'DATA': {'BATCH_SIZE': 128, 'IMG_SIZE': 224, 'INTERPOLATION': 'bicubic',
                 'ZIP_MODE': False},
        'MODEL': {'TYPE': model_type, 'NAME': model_type, 'DROP_PATH_RATE': 0.1},
        'TRAIN': {'EPOCHS': 300, 'BASE_LR': 5e-4, 'MESA': 1.0,
                  'LR_SCHEDULER': {'NAME': 'cosine', 'DECAY_EPOCHS': 30},
                  'OPTIMIZER': {'NAME': 'adamw', 'EPS': 1e-8, 'BETAS': (0.9, 0.999)}},
        'AUG': {'MIXUP': 0.8, 'CUTMIX_MINMAX': None},
        'OUTPUT': 'output/' + model_type, 'EVAL_MODE': False, 'LOCAL_RANK': 0,
    })


def authors_training_state(weights: Dict[str, torch.Tensor]) -> dict:
    """The optimizer (AdamW) and scheduler (timm cosine) entries of the
    authors' files, for ``weights``."""
    names = list(weights)
    return {
        'optimizer': {
            'state': {i: {'step': torch.tensor(300.), 'exp_avg': torch.zeros_like(weights[n]),
                          'exp_avg_sq': torch.zeros_like(weights[n])}
                      for i, n in enumerate(names[:3])},
            'param_groups': [{'lr': 5e-6, 'betas': (0.9, 0.999), 'eps': 1e-8,
                              'weight_decay': 0.05, 'amsgrad': False, 'foreach': None,
                              'params': list(range(len(names)))}]},
        'lr_scheduler': {'param_group_field': 'lr', 'base_values': [5e-4], 'metric': None,
                         't_in_epochs': False, 'noise_range_t': None, 't_initial': 375000,
                         'warmup_t': 25000, 'warmup_prefix': False, 'warmup_steps': [2e-8]},
    }


def save_authors_file(checkpoint: dict, path) -> Path:
    """``torch.save`` as the authors' scripts ran it, with yacs importable:
    a module ``yacs.config`` holding :class:`AuthorsCfgNode` is in
    ``sys.modules`` for the save only."""
    package, module = types.ModuleType('yacs'), types.ModuleType('yacs.config')
    module.CfgNode, package.config = AuthorsCfgNode, module
    with mock.patch.dict(sys.modules, {'yacs': package, 'yacs.config': module}):
        torch.save(checkpoint, path)
    return Path(path)


# --------------------------------------------------------------------------
# the demo models in-process, and a sample for each


def demo_cfg(path, **merge):
    """The config at ``path`` (relative to the repository root) with
    ``{dotted.key: value}`` overrides, its scope made the default."""
    cfg = Config.fromfile(str(ROOT / path))
    cfg.merge_from_dict(merge)
    init_default_scope(cfg.default_scope)
    return cfg


def build(cfg, what='MODELS', key='model'):
    """Build ``cfg[key]`` (or the config dict ``key``) from the registry
    ``what`` of the config's library."""
    registry = getattr(
        importlib.import_module(f'{cfg.default_scope}.registry'), what)
    return registry.build(cfg[key] if isinstance(key, str) else key)


def demo_model(cfg):
    """The config's model, seeded, initialised, SyncBN turned into BN."""
    torch.manual_seed(0)
    # as the Runner does on one process: SyncBN -> BN
    model = revert_sync_batchnorm(build(cfg))
    model.init_weights()
    return model


def det_sample(h, w, seed=0):
    """A random ``(3, h, w)`` uint8 image and a DetDataSample with one box
    and its mask."""
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


def seg_sample(h, w, seed=0, ignored=True):
    """A random ``(3, h, w)`` uint8 image and a SegDataSample with random
    labels, the top third ignored (255) with ``ignored``."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    rng = np.random.default_rng(seed)
    sample = SegDataSample(metainfo=dict(
        img_path='', img_shape=(h, w), ori_shape=(h, w),
        reduce_zero_label=True))
    label = rng.integers(0, 3, (1, h, w))
    if ignored:
        label[:, :h // 3] = 255  # ignored pixels, as ADE20K's 'other'
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(label))
    img = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
    return img, sample


def finite_log_vars(log_vars):
    """Assert that every logged loss value is finite."""
    bad = {k: float(v) for k, v in log_vars.items()
           if not torch.isfinite(torch.as_tensor(v)).all()}
    assert not bad, bad


def rope_tables(backbone, prefix=''):
    """The fixed 224x224 RoPE tables (``layers.i.blocks.j.attn.rope.rotations``,
    ``(56 / 2^i, 56 / 2^i, C_i / 2, 2)``) that the authors' released files
    carry for every block of a ViT3 (docs/model.md, "Checkpoint names"), filled with random values."""
    tables = {}
    for i, stage in enumerate(backbone.layers):
        side = 56 >> i
        for j, _ in enumerate(stage.blocks):
            tables[f'{prefix}layers.{i}.blocks.{j}.attn.rope.rotations'] = \
                torch.randn(side, side, backbone.embed_dims[i] // 2, 2)
    return tables
