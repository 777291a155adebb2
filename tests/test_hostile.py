"""Hostile and broken inputs, second round: checkpoints from every source
load without running code, damaged files are named as damaged, no
checkpoint is lost, diverging runs stop, checkpoints must fit the model,
bad annotations are named before training, and a few command-line mistakes
get clear messages.

Checkpoint sources are served by a local HTTP server on 127.0.0.1 only (a
thread of this process); a hostile file would create a marker file when
unpickled. The run-time hooks are tested on a toy mmengine Runner
in-process (a second each); the tools run as subprocesses on the tiny demo
data set, each stopping before or right after its first step.
"""
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from _helpers import (DET_CFG, ROOT, SEG_CFG, TIMEOUT, Explosive,
                      TrainingNote, det_data_overrides, loader_overrides,
                      run_tool, seg_data_overrides, tool_env)
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import METRICS
from mmengine.runner import CheckpointLoader, Runner

import mmvit3  # noqa: F401  (the safe loaders and hooks)
from mmvit3.datasets import check_coco_file, check_seg_labels
from mmvit3.engine import LOCK_NAME, check_model_checkpoint, find_resumable_checkpoint
from mmvit3.errors import (BadAnnotationError, CheckpointMismatchError, CorruptCheckpointError,
                           NonFiniteCheckpointError, NonFiniteLossError, UnsafeCheckpointError,
                           WorkDirBusyError)
from mmvit3.safe_load import allow_nonfinite_weights, trust_checkpoints


def run(*args, env=None, timeout=TIMEOUT):
    """``python *args`` in the repository root with extra environment;
    (exit status, stdout and stderr together)."""
    return run_tool(*args, env=env, timeout=timeout)


def live_process() -> subprocess.Popen:
    """A process that lives until killed (it waits for input that never
    comes), for a lock held by a live run."""
    return subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],
                            stdin=subprocess.PIPE)


def stock_tool(scope: str, name: str) -> str:
    import importlib
    module = importlib.import_module(scope)
    return str(Path(module.__file__).parent / '.mim' / 'tools' / f'{name}.py')


def seg_options(root, *extra):
    return ['--cfg-options',
            *loader_overrides('', num_workers=0, persistent_workers=False),
            *seg_data_overrides(root), *extra]


def seg_train_options(root, *extra, iters=1):
    return seg_options(root, f'train_cfg.max_iters={iters}',
                       'train_cfg.val_begin=1000',
                       'default_hooks.checkpoint.interval=1000',
                       'default_hooks.logger.interval=1',
                       'train_dataloader.batch_size=2', *extra)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """(folder served, base URL): an HTTP server on 127.0.0.1, this process
    only."""
    root = tmp_path_factory.mktemp('served')
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{httpd.server_port}'
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile(server, tmp_path):
    """(URL of a checkpoint that runs ``touch MARKER`` when unpickled, the
    marker path)."""
    root, base = server
    marker = tmp_path / 'code_ran'
    name = f'evil_{tmp_path.name}.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)},
                'meta': {'note': Explosive(marker)}}, root / name)
    return f'{base}/{name}', marker


# --------------------------------------------------------------------------
# 1. no code from any checkpoint source


def test_every_scheme_loads_weights_only(hostile, tmp_path, monkeypatch):
    """http(s) and the names mmengine resolves to URLs (torchvision://,
    modelzoo://, open-mmlab://, mmcls://) refuse a hostile file, naming it;
    nothing runs, also through mmengine's load_checkpoint."""
    from mmengine.runner import checkpoint as ckpt
    url, marker = hostile
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    table = {'evil': url}
    monkeypatch.setattr(ckpt, 'get_torchvision_models', lambda: table)
    monkeypatch.setattr(ckpt, 'get_external_models', lambda: table)
    monkeypatch.setattr(ckpt, 'get_mmcls_models', lambda: table)
    for name in (url, 'torchvision://evil', 'modelzoo://evil',
                 'open-mmlab://evil', 'openmmlab://evil', 'mmcls://evil'):
        with pytest.raises(UnsafeCheckpointError) as err:
            CheckpointLoader.load_checkpoint(name)
        assert f'Refused to load {url}' in str(err.value), name
        assert 'system' in str(err.value)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(url)):
        ckpt.load_checkpoint(nn.Linear(2, 2), url)
    assert not marker.exists()
    # a URL that does not answer with a file is named
    from mmvit3.errors import CheckpointDownloadError
    missing = url.rsplit('/', 1)[0] + '/missing.pth'
    with pytest.raises(CheckpointDownloadError, match=re.escape(missing) + '.*404'):
        CheckpointLoader.load_checkpoint(missing)
    # the opt-in is the same as for local files
    with trust_checkpoints():
        CheckpointLoader.load_checkpoint(url)
    assert marker.exists()


def test_tools_refuse_a_hostile_url(hostile, demo_root, tmp_path):
    url, marker = hostile
    env = {'TORCH_HOME': str(tmp_path / 'torch')}
    runs = {
        'tools/test.py': run('tools/test.py', SEG_CFG, url, '--work-dir',
                             tmp_path / 'test', *seg_options(demo_root),
                             env=env),
        'load_from=URL': run(
            'tools/train.py', SEG_CFG, '--work-dir', tmp_path / 'load_from',
            *seg_train_options(demo_root, f'load_from={url}'), env=env),
        'tools/train.py --resume URL': run(
            'tools/train.py', SEG_CFG, '--resume', url, '--work-dir',
            tmp_path / 'resume', *seg_train_options(demo_root), env=env),
    }
    for how, (rc, out) in runs.items():
        assert rc == 2, (how, out[-3000:])
        assert f'Refused to load {url}' in out, (how, out[-3000:])
        assert '--trust-checkpoint' in out and 'Traceback' not in out, how
    assert not marker.exists()


def test_stock_tools_refuse_a_hostile_url_and_take_the_config_opt_in(
        hostile, server, demo_root, tmp_path):
    """mmseg's own tools/test.py (the demo config inherits
    configs/_base_/mmvit3_runtime.py): refused with the config key as the
    opt-in; a harmless object then loads with trust_checkpoint=True."""
    url, marker = hostile
    env = {'TORCH_HOME': str(tmp_path / 'torch')}
    test_py = stock_tool('mmseg', 'test')
    rc, out = run(test_py, SEG_CFG, url, '--work-dir', tmp_path / 'a',
                  *seg_options(demo_root), env=env)
    assert rc != 0 and f'Refused to load {url}' in out, out[-3000:]
    assert 'trust_checkpoint = True' in out and 'CheckpointSafetyHook' in out
    assert not marker.exists()

    # a note (harmless object) in a real segmentor checkpoint
    from _helpers import demo_cfg, demo_model
    model = demo_model(demo_cfg(SEG_CFG))
    root, base = server
    torch.save({'state_dict': model.state_dict(),
                'meta': {'note': TrainingNote('mine')}}, root / 'note.pth')
    rc, out = run(test_py, SEG_CFG, f'{base}/note.pth', '--work-dir',
                  tmp_path / 'b',
                  *seg_options(demo_root, 'trust_checkpoint=True'), env=env)
    assert rc == 0, out[-3000:]
    assert 'full unpickling (trusted)' in out and 'mIoU' in out


# --------------------------------------------------------------------------
# 2. damaged files are called damaged, with their path


@pytest.fixture(scope='module')
def damaged(tmp_path_factory):
    """name -> a file that is no usable checkpoint."""
    folder = tmp_path_factory.mktemp('damaged')
    good = folder / 'good.pth'
    torch.save({'state_dict': {'w': torch.randn(64, 64)}}, good)
    data = good.read_bytes()
    files = {
        'truncated': data[:len(data) // 2],
        'zero-byte': b'',
        'random': np.random.default_rng(0).bytes(4096).replace(b'\x80', b'\x81'),
        'json': json.dumps({'not': 'a checkpoint'}).encode(),
        'html': b'<!DOCTYPE html><html><body>404 Not Found</body></html>',
        'legacy-truncated': b'\x80\x02\x8a\x0alm\xfc\x9cF\xf9 j\xa8P\x19.\x80',
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f'{name}.pth'
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize('name', ['truncated', 'zero-byte', 'random', 'json',
                                  'html', 'legacy-truncated'])
def test_damaged_checkpoint_is_named_corrupt(damaged, name):
    path = str(damaged[name])
    with pytest.raises(CorruptCheckpointError) as err:
        CheckpointLoader.load_checkpoint(path)
    text = str(err.value)
    assert path in text
    assert re.search(r'empty|incomplete|corrupt|not a PyTorch checkpoint', text)
    assert 'pickled Python objects' not in text and 'trust' not in text
    with trust_checkpoints(), pytest.raises(CorruptCheckpointError):
        CheckpointLoader.load_checkpoint(path)


def test_tools_name_a_truncated_checkpoint(damaged, demo_root, tmp_path):
    path = damaged['truncated']
    rc, out = run('tools/test.py', SEG_CFG, path, '--work-dir', tmp_path,
                  *seg_options(demo_root))
    assert rc == 2, out[-3000:]
    assert f'Checkpoint {path} is incomplete' in out
    assert 'Traceback' not in out and '--trust-checkpoint' not in out


# --------------------------------------------------------------------------
# the toy runner: the hooks in-process


class Toy(BaseModel):
    """y = w x on 2-d inputs; labels of NaN make the loss NaN."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return {'loss': ((out - labels) ** 2).mean()}
        return out


def toy_runner(work_dir, nan_from=None, max_iters=6, resume=False,
               load_from=None, max_keep_ckpts=1, patience=1, save_best=None,
               **cfg):
    data = []
    for i in range(max_iters):
        label = float('nan') if nan_from is not None and i + 1 >= nan_from else 1.0
        data.append(dict(inputs=torch.full((2, ), float(i % 3)),
                         labels=torch.tensor([label])))
    toy_runner.count = getattr(toy_runner, 'count', 0) + 1
    loader = dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=1, collate_fn=dict(type='default_collate'))
    val = dict(val_dataloader=loader, val_cfg=dict(),
               val_evaluator=dict(type='ToyMetric')) if save_best else {}
    best = dict(save_best=save_best, rule='greater') if save_best else {}
    return Runner(
        **val,
        model=Toy(), work_dir=str(work_dir),
        experiment_name=f'toy{toy_runner.count}_{Path(work_dir).name}',
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=2),
        default_hooks=dict(checkpoint=dict(
            type='CheckpointHook', by_epoch=False, interval=2,
            max_keep_ckpts=max_keep_ckpts, **best)),
        custom_hooks=[dict(type='CheckpointSafetyHook'),
                      dict(type='WorkDirLockHook'),
                      dict(type='NonFiniteLossHook', patience=patience)],
        resume=resume, load_from=load_from, cfg=dict(cfg))


def test_a_failed_save_loses_no_checkpoint(tmp_path, monkeypatch):
    """max_keep_ckpts=1, the disk fills up half-way through the second
    save: the first checkpoint is still there, last_checkpoint names it."""
    from mmengine.fileio import LocalBackend
    put = LocalBackend.put

    def full_disk(self, obj, filepath):
        if 'iter_4' in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(28, 'No space left on device')
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', full_disk)
    with pytest.raises(OSError, match='No space'):
        toy_runner(tmp_path).train()
    assert (tmp_path / 'iter_2.pth').is_file()
    assert not (tmp_path / 'iter_4.pth').exists()  # never the final name
    assert not list(tmp_path.glob('*.tmp'))  # and the partial file is gone
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    CheckpointLoader.load_checkpoint(str(tmp_path / 'iter_2.pth'))
    # and a normal run rotates only after writing
    monkeypatch.setattr(LocalBackend, 'put', put)
    toy_runner(tmp_path / 'ok').train()
    assert sorted(p.name for p in (tmp_path / 'ok').glob('*.pth')) == ['iter_6.pth']
    assert not list((tmp_path / 'ok').glob('*.tmp'))


class ToyMetric(BaseMetric):
    """Better at every evaluation: each one makes a new best checkpoint."""
    calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        ToyMetric.calls += 1
        return {'score': float(ToyMetric.calls)}


METRICS.register_module(name='ToyMetric', module=ToyMetric, force=True)


def test_a_failed_save_keeps_the_previous_best_checkpoint(tmp_path, monkeypatch):
    from mmengine.fileio import LocalBackend
    put = LocalBackend.put

    def full_disk(self, obj, filepath):
        if 'best_score_iter_4' in str(filepath):
            raise OSError(28, 'No space left on device')
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', full_disk)
    runner = toy_runner(tmp_path, max_iters=6, save_best='score')
    with pytest.raises(OSError, match='No space'):
        runner.train()
    assert (tmp_path / 'best_score_iter_2.pth').is_file()
    CheckpointLoader.load_checkpoint(str(tmp_path / 'best_score_iter_2.pth'))


@pytest.mark.parametrize('pointer', ['missing', 'empty', 'stale', 'truncated'])
def test_resume_takes_the_newest_readable_checkpoint(tmp_path, pointer,
                                                     capsys):
    toy_runner(tmp_path, max_iters=4, max_keep_ckpts=-1).train()
    last = tmp_path / 'last_checkpoint'
    if pointer == 'missing':
        last.unlink()
    elif pointer == 'empty':
        last.write_text('')
    elif pointer == 'stale':
        last.write_text(str(tmp_path / 'iter_6.pth'))
    else:  # the newest file is cut short, and named
        data = (tmp_path / 'iter_4.pth').read_bytes()
        (tmp_path / 'iter_6.pth').write_bytes(data[:len(data) // 3])
        last.write_text(str(tmp_path / 'iter_6.pth'))
    runner = toy_runner(tmp_path, max_iters=6, max_keep_ckpts=-1, resume=True)
    runner.train()
    out = capsys.readouterr().out
    assert f'Resume: taking {tmp_path / "iter_4.pth"}' in out
    assert runner.iter == 6
    assert 'resumed epoch: 0, iter: 4' in out
    assert CheckpointLoader.load_checkpoint(
        str(tmp_path / 'iter_6.pth'))['meta']['iter'] == 6


def test_find_resumable_checkpoint_says_why(tmp_path):
    assert find_resumable_checkpoint(str(tmp_path))[0] is None
    (tmp_path / 'iter_8.pth').write_bytes(b'')
    chosen, why = find_resumable_checkpoint(str(tmp_path))
    assert chosen is None and 'iter_8.pth is empty' in why
    # last_checkpoint behind a newer complete file (killed between the two)
    for step in (2, 4):
        torch.save({'meta': {'iter': step}}, tmp_path / f'iter_{step}.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    chosen, why = find_resumable_checkpoint(str(tmp_path))
    assert chosen == str(tmp_path / 'iter_4.pth') and 'is newer' in why
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == (
        str(tmp_path / 'iter_4.pth'), f'{tmp_path / "last_checkpoint"} names it')


def test_a_live_run_holds_its_work_dir(tmp_path, capsys):
    sleeper = live_process()
    try:
        (tmp_path / LOCK_NAME).write_text(f'{sleeper.pid} {os.uname()[1]} x y\n')
        with pytest.raises(WorkDirBusyError, match=rf'pid {sleeper.pid}'):
            toy_runner(tmp_path).train()
        assert not list(tmp_path.glob('*.pth'))
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same lock, its process gone: taken over, and released at the end
    toy_runner(tmp_path).train()
    assert 'Taking over the lock' in capsys.readouterr().out
    assert not (tmp_path / LOCK_NAME).exists()
    assert (tmp_path / 'iter_6.pth').is_file()


def test_tools_refuse_a_work_dir_a_live_run_holds(demo_root, tmp_path):
    sleeper = live_process()
    try:
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / LOCK_NAME).write_text(f'{sleeper.pid} {os.uname()[1]} x y\n')
        rc, out = run('tools/train.py', SEG_CFG, '--work-dir', tmp_path,
                      *seg_train_options(demo_root))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert rc == 2, out[-3000:]
    assert f'in use by another training run (pid {sleeper.pid}' in out
    assert 'Traceback' not in out
    # refused before the Runner wrote anything there (logs, config dump)
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]


def test_stock_train_tool_saves_safely_and_resumes_without_last_checkpoint(
        demo_root, tmp_path):
    """mmseg's own tools/train.py with the demo config (which inherits
    configs/_base_/mmvit3_runtime.py): checkpoints by write-then-rename, the
    lock released at the end, and --resume without last_checkpoint takes
    the newest checkpoint instead of starting again."""
    train_py = stock_tool('mmseg', 'train')
    options = ['default_hooks.checkpoint.interval=2',
               'default_hooks.checkpoint.save_optimizer=False']
    rc, out = run(train_py, SEG_CFG, '--work-dir', tmp_path,
                  *seg_train_options(demo_root, *options, iters=2))
    assert rc == 0, out[-3000:]
    assert (tmp_path / 'iter_2.pth').is_file()
    assert not list(tmp_path.glob('*.tmp')) and not (tmp_path / LOCK_NAME).exists()
    (tmp_path / 'last_checkpoint').unlink()
    rc, out = run(train_py, SEG_CFG, '--work-dir', tmp_path, '--resume',
                  *seg_train_options(demo_root, *options, iters=3))
    assert rc == 0, out[-3000:]
    assert f'Resume: taking {tmp_path / "iter_2.pth"}: there is no' in out
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [1/3]' not in out and 'Iter(train) [3/3]' in out


# --------------------------------------------------------------------------
# 3. non-finite values


def test_nan_loss_stops_training_and_keeps_the_finite_checkpoint(tmp_path):
    """NaN from iteration 3, patience 3: the step of iteration 3 makes the
    weights NaN; the save at 4 is refused (iter_2 kept, max_keep_ckpts=1),
    the run stops at 5."""
    runner = toy_runner(tmp_path, nan_from=3, max_iters=8, patience=3)
    with pytest.raises(NonFiniteLossError, match=r'iteration 5: the loss is '
                       r'not finite \(loss=nan\) for 3 consecutive'):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')
    # patience 1 stops at the first NaN, before that iteration's checkpoint
    runner = toy_runner(tmp_path / 'p1', nan_from=4, max_iters=8)
    with pytest.raises(NonFiniteLossError, match='iteration 4'):
        runner.train()
    assert sorted(p.name for p in (tmp_path / 'p1').glob('*.pth')) == ['iter_2.pth']


def test_every_process_stops_at_the_same_iteration(tmp_path):
    """Two processes, NaN in the second one's loss only: both stop at that
    iteration (no process waits in the next gradient all-reduce)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={port}', str(ROOT / 'tests' / '_toy_dist_nan.py'),
         str(tmp_path)], cwd=ROOT, env=tool_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for rank in (0, 1):
        text = (tmp_path / f'rank{rank}.txt').read_text()
        assert text.startswith('NonFiniteLossError: Training stopped at '
                               'iteration 2'), (rank, text)
    assert 'of another process' in (tmp_path / 'rank0.txt').read_text()


def test_nonfinite_weights_do_not_load_without_the_opt_out(tmp_path):
    path = tmp_path / 'nan.pth'
    weight = torch.ones(1, 2)
    weight[0, 0] = float('nan')
    torch.save({'state_dict': {'linear.weight': weight, 'linear.bias': torch.ones(1)}}, path)
    with pytest.raises(NonFiniteCheckpointError, match=r'linear\.weight \(1 NaN'):
        CheckpointLoader.load_checkpoint(str(path))
    with allow_nonfinite_weights():
        CheckpointLoader.load_checkpoint(str(path))
    # through a Runner's load_from, with the config key as the opt-out
    with pytest.raises(NonFiniteCheckpointError, match='allow_nonfinite_weights'):
        toy_runner(tmp_path / 'a', load_from=str(path)).train()
    runner = toy_runner(tmp_path / 'b', load_from=str(path), allow_nonfinite_weights=True)
    with pytest.raises(NonFiniteLossError):  # the NaN weight loaded, and trained on
        runner.train()
    assert torch.isnan(runner.model.linear.weight).any()


def test_convert_refuses_nonfinite_weights_and_its_own_input(tmp_path):
    from mmvit3.cli.convert_checkpoint import main as convert
    state = {k: v.clone() for k, v in mmvit3.ViT3(arch=dict(
        embed_dims=[32, 32, 32, 32], depths=[1, 1, 1, 1])).state_dict().items()}
    state['layers.0.blocks.0.norm1.weight'][0] = float('inf')
    src = tmp_path / 'diverged.pth'
    torch.save({'state_dict': state}, src)
    assert convert([str(src), str(tmp_path / 'out.pth')]) == 2
    assert not (tmp_path / 'out.pth').exists()
    assert convert([str(src), str(tmp_path / 'out.pth'), '--allow-nonfinite']) == 0
    assert convert([str(src), str(src), '--overwrite']) == 2
    assert torch.load(src, weights_only=True)['state_dict'].keys() == state.keys()


def test_an_exploding_loss_or_nonfinite_weights_stop_training_whatever_the_optimizer(tmp_path):
    """SGD with a huge lr: the loss of iteration 2 is finite but some 1e10
    times the first one; with lr=inf the only step leaves NaN weights, which
    no later loss would show."""
    runner = toy_runner(tmp_path / 'a', max_iters=4)
    runner.optim_wrapper = dict(optimizer=dict(type='SGD', lr=1e5))
    with pytest.raises(NonFiniteLossError, match=r'iteration 2: the loss exploded \(loss=\S+, '
                       r'\S+ times its \S+ of the first iterations \(max_loss_ratio=10000\)'):
        runner.train()
    runner = toy_runner(tmp_path / 'b', max_iters=1)
    runner.optim_wrapper = dict(optimizer=dict(type='SGD', lr=float('inf')))
    with pytest.raises(NonFiniteLossError, match=r'after the step of iteration 1, the last: the '
                       r'weights hold NaN / Inf in \d tensors \(linear\.'):
        runner.train()


def test_a_diverging_sgd_tool_run_is_named_as_divergence(demo_root, tmp_path):
    """The demo detector with SGD at lr=1000: the loss goes from about 5 to
    about 2e8 (finite) at iteration 2; before, the run saved that
    checkpoint, evaluated to nothing and exited 0."""
    config = tmp_path / 'sgd.py'
    config.write_text(f"_base_ = ['{ROOT / DET_CFG}']\n"
                      "optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict("
                      "type='SGD', lr=1000.0, momentum=0.9, weight_decay=0.0001))\n")
    rc, out = run('tools/train.py', config, '--work-dir', tmp_path / 'w', '--cfg-options',
                  *det_data_overrides(demo_root), 'train_cfg.max_iters=2',
                  'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
                  'train_dataloader.batch_size=2',
                  *loader_overrides('', num_workers=0, persistent_workers=False))
    assert rc == 3, out[-3000:]
    assert 'Training stopped at iteration 2: the loss exploded' in out
    assert 'The run diverged: lower the learning rate' in out
    assert not list((tmp_path / 'w').glob('*.pth'))


def test_a_diverging_tool_run_exits_non_zero(demo_root, tmp_path):
    rc, out = run('tools/train.py', SEG_CFG, '--work-dir', tmp_path,
                  *seg_train_options(demo_root, 'optim_wrapper.optimizer.lr=1e30',
                                     'optim_wrapper.clip_grad=None', iters=3))
    assert rc == 3, out[-3000:]
    assert 'Training stopped at iteration' in out and 'lower the learning rate' in out
    assert not list(tmp_path.glob('*.pth'))


# --------------------------------------------------------------------------
# 5. checkpoints must fit the model


@pytest.fixture(scope='module')
def task_checkpoints(tmp_path_factory):
    """Whole-model checkpoints of the demo detector and segmentor."""
    from _helpers import demo_cfg, demo_model
    folder = tmp_path_factory.mktemp('tasks')
    paths = {}
    for name, cfg in (('det', DET_CFG), ('seg', SEG_CFG)):
        model = demo_model(demo_cfg(cfg))
        paths[name] = folder / f'{name}.pth'
        torch.save({'meta': {}, 'state_dict': model.state_dict()}, paths[name])
    return paths


def test_a_checkpoint_of_another_task_is_refused(task_checkpoints, demo_root,
                                                 tmp_path):
    rc, out = run('tools/test.py', SEG_CFG, task_checkpoints['det'],
                  '--work-dir', tmp_path / 'seg', *seg_options(demo_root))
    assert rc == 2, out[-3000:]
    assert 'another model' in out and 'decode_head' in out and 'roi_head' in out
    assert 'Iter(test)' not in out
    rc, out = run('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'det',
                  '--cfg-options', f'load_from={task_checkpoints["seg"]}',
                  'train_cfg.max_iters=1', *det_data_overrides(demo_root),
                  *loader_overrides('', num_workers=0, persistent_workers=False))
    assert rc == 2, out[-3000:]
    assert 'no weights for neck, rpn_head, roi_head' in out
    assert not list((tmp_path / 'det').glob('*.pth'))


def test_head_layouts_must_fit_for_evaluation():
    def model(classes, aux=True):
        m = nn.Module()
        m.backbone = nn.Linear(4, 4)
        m.decode_head = nn.Linear(4, classes)
        if aux:
            m.auxiliary_head = nn.Linear(4, classes)
        return m

    def ckpt(m):
        return {'state_dict': m.state_dict()}

    check_model_checkpoint(model(3), ckpt(model(3)), strict=True)
    with pytest.raises(CheckpointMismatchError, match=r'decode_head\.weight: '
                       r'file \(5, 4\), model \(3, 4\)'):
        check_model_checkpoint(model(3), ckpt(model(5)), strict=True)
    # fine-tuning (load_from in training) to other classes is left to mmengine
    check_model_checkpoint(model(3), ckpt(model(5)), strict=False)
    with pytest.raises(CheckpointMismatchError, match='no weights for auxiliary_head'):
        check_model_checkpoint(model(3), ckpt(model(3, aux=False)))
    # a whole part the test config leaves out is harmless; an unknown entry
    # inside one of its parts is another layout
    check_model_checkpoint(model(3, aux=False), ckpt(model(3)), strict=True)
    extra = ckpt(model(3))
    extra['state_dict']['decode_head.extra'] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError,
                       match=r'1 entries the model lacks: decode_head\.extra'):
        check_model_checkpoint(model(3), extra, strict=True)


def test_a_checkpoint_that_would_load_nothing_is_refused(tmp_path):
    """What mmengine would only warn about before evaluating the initial
    weights: no dict, no weights, or none of this model's."""
    from mmvit3.engine import check_has_weights
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    model.decode_head = nn.Linear(2, 2)
    check_has_weights(model, {'state_dict': model.state_dict()})
    for checkpoint, match in (
            (torch.zeros(3), 'holds a Tensor, not a checkpoint'),
            ({'meta': {'iter': 3}, 'note': 'x'}, r"holds no weights \(its entries: meta, note\)"),
            ({'state_dict': {'fc.weight': torch.zeros(2)}},
             r'None of the checkpoint.s 1 weights belongs to this model.*fc\.weight')):
        with pytest.raises(CheckpointMismatchError, match=match):
            check_has_weights(model, checkpoint)
    # through a Runner: refused before anything loads
    path = tmp_path / 'empty.pth'
    torch.save({'meta': {}}, path)
    with pytest.raises(CheckpointMismatchError, match=rf'{path}: The checkpoint holds no weights'):
        toy_runner(tmp_path / 'w', load_from=str(path)).train()


# --------------------------------------------------------------------------
# 6. annotations


def coco(images=1, anns=None, cats=None):
    return {'images': [{'id': i, 'file_name': f'{i}.jpg', 'width': 64,
                        'height': 64} for i in range(images)],
            'annotations': anns if anns is not None else [
                {'id': 1, 'image_id': 0, 'category_id': 1,
                 'bbox': [1, 1, 10, 10], 'area': 100, 'iscrowd': 0,
                 'segmentation': [[1, 1, 11, 1, 11, 11]]}],
            'categories': cats or [{'id': 1, 'name': 'circle'}]}


@pytest.mark.parametrize('content, match', [
    ('', 'is empty'),
    ('{"images": [', 'is not valid JSON'),
    ('[1, 2]', 'holds a JSON list'),
    (json.dumps({'annotations': [], 'categories': []}), "no list 'images'"),
    (json.dumps(coco(images=0)), 'lists no images'),
    (json.dumps(coco(cats=[{'id': 1, 'name': 'dog'}])), 'none of its categories'),
])
def test_unusable_annotation_files_are_named(tmp_path, content, match):
    path = tmp_path / 'ann.json'
    path.write_text(content)
    with pytest.raises(BadAnnotationError, match=match) as err:
        check_coco_file(str(path), classes=('circle', 'square'))
    assert str(path) in str(err.value)


def test_the_annotation_check_walks_the_config_and_can_be_turned_off(tmp_path):
    from mmengine.config import Config

    from mmvit3.datasets import check_annotations
    (tmp_path / 'val.json').write_text('{"images": ')
    cfg = dict(default_scope='mmdet',
               val_evaluator=dict(ann_file=str(tmp_path / 'val.json')))
    with pytest.raises(BadAnnotationError, match=r'val\.json is not valid JSON'):
        check_annotations(Config(cfg), ['val'])
    check_annotations(Config(dict(cfg, check_annotations=False)), ['val'])


def test_dropped_annotations_are_counted(tmp_path):
    anns = [  # each with the area mmdet reads
        {'id': 1, 'image_id': 0, 'category_id': 1, 'bbox': [1, 1, 0, 5], 'area': 25},
        {'id': 2, 'image_id': 0, 'category_id': 1, 'bbox': [1, 1, 5, -2], 'area': 25},
        {'id': 3, 'image_id': 0, 'category_id': 7, 'bbox': [1, 1, 5, 5], 'area': 25},
        {'id': 4, 'image_id': 0, 'category_id': 1, 'bbox': [1, 1, 5, 5], 'area': 25,
         'segmentation': [[1, 1, 5, 5]]},
    ]
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco(anns=anns)))
    lines = check_coco_file(str(path), classes=('circle', ))
    text = '\n'.join(lines)
    assert f'{path}: 2 boxes of zero or negative size' in text
    assert '1 unknown category ids' in text and 'category_id 7' in text
    assert '1 polygons of fewer than 3 points' in text
    # and in training (filter_empty_gt), an empty result is an error
    with pytest.raises(BadAnnotationError, match='no image keeps a usable annotation'):
        check_coco_file(str(path), ('circle', ), dict(filter_empty_gt=True))


def test_bad_segmentation_labels_are_named(tmp_path):
    from PIL import Image
    img = tmp_path / 'a.jpg'
    Image.new('RGB', (8, 6)).save(img)
    labels = {
        'ok': np.full((6, 8), 2, np.uint8),
        'range': np.full((6, 8), 9, np.uint8),
        'size': np.zeros((5, 8), np.uint8),
        'rgb': np.zeros((6, 8, 3), np.uint8),
    }
    pairs = []
    for name, value in labels.items():
        path = tmp_path / f'{name}.png'
        Image.fromarray(value).save(path)
        pairs.append((str(img), str(path)))
    tiny = tmp_path / 'tiny.jpg'
    Image.new('RGB', (1, 1)).save(tiny)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / 'tiny.png')
    pairs.append((str(tiny), str(tmp_path / 'tiny.png')))
    check_seg_labels(pairs[:1], num_classes=3, reduce_zero_label=True,
                     min_side=4)
    with pytest.raises(BadAnnotationError) as err:
        check_seg_labels(pairs, num_classes=3, reduce_zero_label=True,
                         min_side=4)
    text = str(err.value)
    assert f'{tiny} 1x1' in text and 'smaller than 4 px' in text
    assert f'{tmp_path}/range.png: [9]' in text and 'outside 0..3' in text
    assert f'{tmp_path}/size.png 8x5, image 8x6' in text
    assert f'{tmp_path}/rgb.png (RGB)' in text and 'colour label maps' in text


def test_tools_name_a_broken_annotation_file(demo_root, tmp_path):
    ann = tmp_path / 'instances_train.json'
    ann.write_text('{"images": [')
    rc, out = run('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'w',
                  '--cfg-options', *det_data_overrides(demo_root),
                  f'train_dataloader.dataset.ann_file={ann}')
    assert rc == 2, out[-3000:]
    assert f'Annotation file {ann} is not valid JSON' in out
    assert 'Traceback' not in out


def test_tools_name_out_of_range_labels(demo_root, tmp_path):
    import shutil
    from PIL import Image
    ade = tmp_path / 'ade'
    shutil.copytree(demo_root / 'ade', ade)
    bad = sorted((ade / 'annotations' / 'training').glob('*.png'))[1]
    label = np.array(Image.open(bad))
    label[0, :5] = 7  # 3 classes with reduce_zero_label: 0..3 and 255
    Image.fromarray(label).save(bad)
    rc, out = run('tools/train.py', SEG_CFG, '--work-dir', tmp_path / 'w',
                  *seg_train_options(demo_root),
                  *loader_overrides('dataset.', data_root=f'{ade}/'))
    assert rc == 2, out[-3000:]
    assert f'{bad}: [7]' in out and 'outside 0..3' in out
    assert 'Traceback' not in out
    # mmseg's own tool: DataCheckHook (configs/_base_/mmvit3_runtime.py)
    rc, out = run(stock_tool('mmseg', 'train'), SEG_CFG, '--work-dir',
                  tmp_path / 'stock', *seg_train_options(demo_root),
                  *loader_overrides('dataset.', data_root=f'{ade}/'))
    assert rc != 0 and f'{bad}: [7]' in out, out[-3000:]
    assert 'Iter(train)' not in out


def test_out_of_memory_names_the_huge_image(tmp_path):
    from mmengine.config import Config

    from mmvit3.cli.runner import out_of_memory_message
    ann = tmp_path / 'ann.json'
    images = [{'id': 0, 'file_name': 'small.jpg', 'width': 640, 'height': 480},
              {'id': 1, 'file_name': 'huge.jpg', 'width': 12000, 'height': 12000}]
    ann.write_text(json.dumps({'images': images, 'annotations': [],
                               'categories': []}))
    cfg = Config(dict(default_scope='mmdet', test_dataloader=dict(dataset=dict(
        data_root=f'{tmp_path}/', ann_file='ann.json',
        data_prefix=dict(img='img/')))))
    text = out_of_memory_message(cfg, ['test'], RuntimeError(
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate "
        '86400000000 bytes'))
    assert text.startswith('Out of memory: DefaultCPUAllocator')
    assert f'{tmp_path}/img/huge.jpg (12000x12000, 144 MP)' in text
    assert 'Downscale such images' in text


# --------------------------------------------------------------------------
# 7. command-line mistakes


def test_command_line_mistakes_are_named(demo_root, tmp_path):
    rc, out = run('tools/train.py', SEG_CFG, '--cfg-options', 'train_cfg.max_iters')
    assert rc == 2 and "'train_cfg.max_iters': each override is KEY=VALUE" in out
    assert 'Traceback' not in out

    # --out that cannot be written, or that would replace an input: refused
    # before the model is built
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': {}}, ckpt)
    for out_path, reason in ((blocker / 'res.pkl', 'is not a directory'),
                             (ckpt, 'is an input of this run')):
        rc, out = run('tools/test.py', SEG_CFG, ckpt, '--out', out_path,
                      '--work-dir', tmp_path / 'w', *seg_options(demo_root))
        assert rc == 2 and reason in out and 'nothing was evaluated' in out, out[-3000:]
        assert 'Loads checkpoint' not in out
    assert ckpt.stat().st_size > 0

    config = tmp_path / 'misspelt_hook.py'
    config.write_text(f"_base_ = '{ROOT / SEG_CFG}'\n"
                      "custom_hooks = [dict(type='NonFiniteLosHook')]\n")
    rc, out = run('tools/train.py', config, '--work-dir', tmp_path / 'w',
                  *seg_train_options(demo_root))
    assert rc != 0, out[-3000:]
    assert "Unknown type 'NonFiniteLosHook'" in out, out[-3000:]
    assert "Did you mean: 'NonFiniteLossHook'" in out
