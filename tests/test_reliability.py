"""Reliability of the tools on the segmentation demo, on CPU: training
checkpoints load with safe unpickling (and a hostile file is refused without
running anything, a trusted one loads only with the opt-in), a run killed
with SIGKILL resumes to the same state as an uninterrupted one, seeded
deterministic runs repeat their losses, and tools/dist_train.sh trains with
two processes (gloo) that hold identical weights.

The tools run as subprocesses on a tiny data set (64 px images, batch 2,
no dataloader workers: with workers the data order would also need their
seeding); one uninterrupted 4-iteration run and one killed run are shared
by the tests.
"""
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import (ROOT, SEG_CFG, TIMEOUT, Explosive, TrainingNote,
                      loader_overrides, run_tool, seg_data_overrides,
                      tool_env, train_log)
from mmengine.config import Config

from mmvit3 import UnsafeCheckpointError, load_checkpoint_file
from mmvit3.safe_load import mmengine_safe_globals, trust_checkpoints
from mmvit3.cli.common import adapt_to_cpu_distributed
from mmvit3.config import config_scope

MAX_ITERS = 4


def run_overrides(demo_root, max_iters=MAX_ITERS):
    """Seeded deterministic runs of ``max_iters`` iterations, a checkpoint
    (with optimizer and schedulers) every 2, a log record every iteration,
    no validation."""
    return [
        f'train_cfg.max_iters={max_iters}', 'train_cfg.val_begin=1000',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
        'randomness.seed=0', 'randomness.deterministic=True',
        *loader_overrides('', num_workers=0, persistent_workers=False),
        *seg_data_overrides(demo_root)
    ]


def eval_overrides(demo_root):
    return ['--cfg-options',
            *loader_overrides('', num_workers=0, persistent_workers=False),
            *seg_data_overrides(demo_root)]


@pytest.fixture(scope='module')
def reference(demo_root, tmp_path_factory):
    """The work dir of an uninterrupted run of MAX_ITERS iterations."""
    work = tmp_path_factory.mktemp('reference')
    rc, out = run_tool('tools/train.py', SEG_CFG, '--work-dir', work,
                       '--cfg-options', *run_overrides(demo_root))
    assert rc == 0, out[-5000:]
    assert (work / f'iter_{MAX_ITERS}.pth').is_file(), out[-3000:]
    return work


def with_extra(src: Path, dst: Path, obj) -> Path:
    """A copy of the training checkpoint ``src`` that also holds ``obj``
    (under ``meta``, where a user would keep a note)."""
    ckpt = load_checkpoint_file(str(src))
    ckpt['meta']['note'] = obj
    torch.save(ckpt, dst)
    return dst


# --------------------------------------------------------------------------
# 1. checkpoints under torch >= 2.6


def test_training_checkpoint_loads_with_exactly_the_allowed_types(reference):
    path = str(reference / f'iter_{MAX_ITERS}.pth')
    # not tensors only: plain weights_only unpickling refuses the file ...
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in found
    # ... and every type in it is one mmengine_safe_globals allows
    allowed = {g[1] if isinstance(g, tuple) else
               f'{g.__module__}.{g.__qualname__}'
               for g in mmengine_safe_globals()}
    assert found <= allowed, found - allowed
    ckpt = load_checkpoint_file(path)
    assert ckpt['meta']['iter'] == MAX_ITERS
    assert {'state_dict', 'optimizer', 'param_schedulers',
            'message_hub'} <= set(ckpt)


def test_trust_holds_only_inside_its_block(reference, tmp_path):
    path = str(with_extra(reference / f'iter_{MAX_ITERS}.pth',
                          tmp_path / 'note.pth', TrainingNote('demo')))
    with pytest.raises(UnsafeCheckpointError, match='TrainingNote'):
        load_checkpoint_file(path)
    with trust_checkpoints():
        assert load_checkpoint_file(path)['meta']['note'].text == 'demo'
    with pytest.raises(UnsafeCheckpointError, match=re.escape(path)):
        load_checkpoint_file(path)


def test_hostile_checkpoint_is_refused_by_the_tools(reference, demo_root,
                                                    tmp_path):
    marker = tmp_path / 'ran'
    hostile = with_extra(reference / f'iter_{MAX_ITERS}.pth',
                         tmp_path / 'hostile.pth', Explosive(marker))
    runs = {
        'tools/test.py': run_tool('tools/test.py', SEG_CFG, hostile,
                                  '--work-dir', tmp_path / 'test',
                                  *eval_overrides(demo_root)),
        'load_from': run_tool('tools/train.py', SEG_CFG, '--work-dir',
                              tmp_path / 'train', '--cfg-options',
                              f'load_from={hostile}',
                              *run_overrides(demo_root, max_iters=1)),
    }
    for how, (rc, out) in runs.items():
        assert rc == 2, (how, out[-3000:])
        assert f'Refused to load {hostile}' in out, (how, out[-3000:])
        assert 'system' in out  # names what it would have called
        assert '--trust-checkpoint' in out and 'trust_checkpoint = True' in out
        assert 'Traceback' not in out, (how, out[-3000:])
    assert not marker.exists()
    assert not list((tmp_path / 'train').glob('*.pth'))  # nothing trained


def test_trust_opt_in_loads_a_harmless_object_for_that_run_only(
        reference, demo_root, tmp_path):
    note = with_extra(reference / f'iter_{MAX_ITERS}.pth',
                      tmp_path / 'note.pth', TrainingNote('demo'))
    # the flag, in tools/test.py
    rc, out = run_tool('tools/test.py', SEG_CFG, note, '--trust-checkpoint',
                       '--work-dir', tmp_path / 'test',
                       *eval_overrides(demo_root))
    assert rc == 0, out[-5000:]
    assert 'full unpickling (trusted)' in out and 'mIoU' in out
    # the config key, as load_from in tools/train.py
    rc, out = run_tool('tools/train.py', SEG_CFG, '--work-dir',
                       tmp_path / 'train', '--cfg-options',
                       f'load_from={note}', 'trust_checkpoint=True',
                       *run_overrides(demo_root, max_iters=1))
    assert rc == 0, out[-5000:]
    assert 'full unpickling (trusted)' in out
    assert f'Load checkpoint from {note}' in out
    # the opt-in does not outlive its run: a fresh process refuses the file
    # (mmengine's loader, as the tools' Runner calls it)
    rc, out = run_tool(
        '-c', 'import sys, mmvit3; from mmengine.runner import '
        'CheckpointLoader; CheckpointLoader.load_checkpoint(sys.argv[1])',
        note)
    assert rc != 0 and 'UnsafeCheckpointError' in out, out[-3000:]
    assert f'Refused to load {note}' in out and '_helpers.TrainingNote' in out
    assert '--trust-checkpoint' in out


# --------------------------------------------------------------------------
# 2. resume after SIGKILL; 3. determinism


#: The iteration after which the killed run dies (a checkpoint was saved at 2).
KILLED_AFTER = 3


@pytest.fixture(scope='module')
def killed(demo_root, tmp_path_factory):
    """A run like the reference one that dies of SIGKILL right after
    iteration KILLED_AFTER (a test-only hook kills it, once), having saved a
    checkpoint at 2: (work dir, its command, the iteration of the last
    checkpoint, its output)."""
    work = tmp_path_factory.mktemp('killed')
    config = work.parent / f'{work.name}_config.py'
    config.write_text(f"_base_ = '{ROOT / SEG_CFG}'\n"
                      "custom_imports = dict(imports=['mmvit3', '_kill_hook'], "
                      'allow_failed_imports=False)\n'
                      "custom_hooks = [dict(type='KillAfterIterHook', "
                      f'iteration={KILLED_AFTER})]\n')
    cmd = [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work),
           '--cfg-options', *run_overrides(demo_root)]
    rc, out = run_tool(*cmd[1:], timeout=TIMEOUT)
    assert rc == -signal.SIGKILL, out[-3000:]
    last = (work / 'last_checkpoint').read_text().strip()
    saved = int(re.search(r'iter_(\d+)\.pth$', last).group(1))
    return work, cmd, saved, out


def test_seeded_deterministic_runs_repeat_their_losses(reference, killed):
    work = killed[0]
    first = [r['loss'] for r in train_log(reference)]
    again = [r['loss'] for r in train_log(work)]
    assert len(again) >= 2, killed[3][-3000:]
    assert again == first[:len(again)]
    assert len(set(first)) == len(first)  # the losses do change as it trains


def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_state(
        reference, killed, demo_root, tmp_path):
    work, cmd, saved, out = killed
    assert saved == 2, out[-3000:]
    assert f'Iter(train) [{KILLED_AFTER}/{MAX_ITERS}]' in out  # killed mid-way
    assert not (work / f'iter_{MAX_ITERS}.pth').exists()

    rc, out = run_tool(*cmd[1:], '--resume')
    assert rc == 0, out[-5000:]
    assert f'resumed epoch: 0, iter: {saved}' in out, out[-3000:]
    assert f'Advance dataloader {saved} steps' in out
    resumed_log = train_log(work)
    assert [r['step'] for r in resumed_log] == list(
        range(saved + 1, MAX_ITERS + 1))

    final = load_checkpoint_file(str(work / f'iter_{MAX_ITERS}.pth'))
    ref = load_checkpoint_file(str(reference / f'iter_{MAX_ITERS}.pth'))
    assert final['meta']['iter'] == ref['meta']['iter'] == MAX_ITERS
    # AdamW: every parameter took one step per iteration
    for ckpt in (final, ref):
        steps = {int(s['step']) for s in ckpt['optimizer']['state'].values()}
        assert steps == {MAX_ITERS}
    assert len(final['optimizer']['state']) == len(ref['optimizer']['state'])
    assert final['optimizer']['param_groups'] == \
        ref['optimizer']['param_groups']  # lr, initial_lr, betas, ...
    # schedulers (warm-up, then poly from iteration 30): the same state
    assert len(final['param_schedulers']) == len(ref['param_schedulers'])
    for got, want in zip(final['param_schedulers'], ref['param_schedulers']):
        assert got['_global_step'] == want['_global_step'] == MAX_ITERS
        assert got['last_step'] == want['last_step']
        assert got['_last_value'] == want['_last_value']
    assert final['param_schedulers'][0]['last_step'] == MAX_ITERS
    assert resumed_log[-1]['lr'] == train_log(reference)[-1]['lr']

    # the resumed checkpoint also starts a new run as load_from (safe load)
    ckpt = work / f'iter_{MAX_ITERS}.pth'
    rc, out = run_tool('tools/train.py', SEG_CFG, '--work-dir',
                       tmp_path / 'load_from', '--cfg-options',
                       f'load_from={ckpt}',
                       *run_overrides(demo_root, max_iters=1))
    assert rc == 0, out[-5000:]
    assert f'Load checkpoint from {ckpt}' in out
    assert 'resumed epoch' not in out


# --------------------------------------------------------------------------
# 6. several processes


def test_cpu_distributed_config():
    cfg = Config.fromfile(str(ROOT / SEG_CFG))
    assert config_scope(cfg) == 'mmseg'
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    cfg.launcher = 'none'
    assert not adapt_to_cpu_distributed(cfg, cuda=False)
    cfg.launcher = 'pytorch'
    assert not adapt_to_cpu_distributed(cfg, cuda=True)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert adapt_to_cpu_distributed(cfg, cuda=False)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert 'SyncBN' not in str(cfg.model)
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.model.auxiliary_head.norm_cfg.type == 'BN'
    assert cfg.model_wrapper_cfg.device_ids is None
    cfg.launcher = 'slurm'
    with pytest.raises(ValueError, match='dist_train.sh'):
        adapt_to_cpu_distributed(cfg, cuda=False)


def test_config_scope_names_the_tool_and_file(tmp_path):
    path = tmp_path / 'cls.py'
    path.write_text("default_scope = 'mmpretrain'\n")
    with pytest.raises(ValueError, match=r"tools/x.py serves .*'mmpretrain'"
                       rf'.*{re.escape(str(path))}'):
        config_scope(Config.fromfile(str(path)), 'tools/x.py')


def test_dist_train_two_cpu_processes_hold_identical_weights(
        demo_root, tmp_path):
    config = tmp_path / 'dist_demo.py'
    config.write_text(
        f"_base_ = '{ROOT / SEG_CFG}'\n"
        "custom_imports = dict(imports=['mmvit3', '_rank_weights_hook'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='RankWeightsHook')]\n")
    work = tmp_path / 'work'
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
         str(work), '--cfg-options',
         *run_overrides(demo_root, max_iters=2)],
        cwd=ROOT, env=tool_env(PYTHON=sys.executable),  # torchrun picks a free port
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=TIMEOUT)
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:]
    assert 'gloo' in out and 'SyncBN' in out  # the CPU adaptation, logged
    # every gradient has its parameter's strides (depth-wise weights too)
    assert 'Grad strides do not match' not in out
    ranks = [torch.load(work / f'rank{r}_weights.pth', weights_only=True)
             for r in (0, 1)]
    assert [r['rank'] for r in ranks] == [0, 1]
    assert all(r['world_size'] == 2 for r in ranks)
    # each process trained on its own half of every global batch ...
    for batch0, batch1 in zip(ranks[0]['images'], ranks[1]['images']):
        assert len(batch0) == len(batch1) == 2
        assert not set(batch0) & set(batch1)
    assert len(ranks[0]['images']) == 2
    # ... and after the steps both hold the same weights, changed by them
    a, b = ranks[0]['final'], ranks[1]['final']
    assert a.keys() == b.keys() and len(a) > 100
    for name in a:
        assert torch.equal(a[name], b[name]), name
    changed = [n for n in a if not torch.equal(a[n], ranks[0]['initial'][n])]
    assert len(changed) > len(a) // 2
    assert (work / 'iter_2.pth').is_file()


def test_slurm_train_script_starts_one_task_per_gpu(tmp_path):
    """tools/slurm_train.sh hands srun the task layout and tools/train.py
    --launcher slurm (srun itself stood in for by a script that records its
    arguments)."""
    record = tmp_path / 'srun_args'
    srun = tmp_path / 'bin' / 'srun'
    srun.parent.mkdir()
    srun.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    srun.chmod(0o755)
    env = tool_env(PATH=f'{srun.parent}{os.pathsep}{os.environ["PATH"]}',
                   GPUS='16', GPUS_PER_NODE='8', SRUN_ARGS='--time=1:00:00')
    proc = subprocess.run(
        ['bash', 'tools/slurm_train.sh', 'gpu', 'vit3', SEG_CFG, '--resume'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().splitlines()
    assert args[:2] == ['-p', 'gpu']
    for expected in ('--job-name=vit3', '--gres=gpu:8', '--ntasks=16',
                     '--ntasks-per-node=8', '--time=1:00:00'):
        assert expected in args
    assert args[-4:] == [SEG_CFG, '--launcher', 'slurm', '--resume']
    assert args[-5].endswith('tools/train.py')
