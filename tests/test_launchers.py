"""tools/dist_*.sh and tools/slurm_*.sh: mmdet's argument order, and each
`exec`s its launcher, so that a scheduler's SIGTERM to the script reaches
torchrun / srun and ends every process they started."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import ROOT, SEG_CFG, seg_data_overrides, tool_env

TOOLS = ROOT / 'tools'


def fake_launcher(tmp_path, name):
    """An executable ``name`` that prints its pid and arguments."""
    path = tmp_path / name
    path.write_text('#!/usr/bin/env bash\necho "PID $$"\n'
                    'for a in "$@"; do echo "ARG $a"; done\n')
    path.chmod(0o755)
    return path


def run_script(script, *args, **env):
    proc = subprocess.Popen(['bash', str(TOOLS / script), *map(str, args)],
                            env=tool_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    pid = int(next(line for line in lines if line.startswith('PID '))[4:])
    return proc.pid, pid, [line[4:] for line in lines if line.startswith('ARG ')]


def test_dist_scripts_exec_torchrun(tmp_path):
    python = fake_launcher(tmp_path, 'python')
    shell, pid, args = run_script('dist_train.sh', 'CFG', 2, '--amp',
                                  PYTHON=str(python))
    assert pid == shell  # exec: the launcher is the script's own process
    assert args[:2] == ['-m', 'torch.distributed.run']
    assert '--nproc_per_node=2' in args
    # one machine: torchrun picks a free port; a given PORT (or several nodes) pins it
    assert '--standalone' in args and not any(a.startswith('--master_port') for a in args)
    _, _, pinned = run_script('dist_train.sh', 'CFG', 2, PYTHON=str(python), PORT='29411')
    assert '--master_port=29411' in pinned and '--standalone' not in pinned
    _, _, nodes = run_script('dist_train.sh', 'CFG', 2, PYTHON=str(python), NNODES='2',
                             NODE_RANK='1', MASTER_ADDR='10.1.2.3')
    assert {'--nnodes=2', '--node_rank=1', '--master_addr=10.1.2.3',
            '--master_port=29500'} <= set(nodes)
    assert args[-5].endswith('tools/train.py')
    assert args[-4:] == ['CFG', '--launcher', 'pytorch', '--amp']

    shell, pid, args = run_script('dist_test.sh', 'CFG', 'CKPT', 3, '--tta',
                                  PYTHON=str(python))
    assert pid == shell
    assert '--nproc_per_node=3' in args
    assert args[-6].endswith('tools/test.py')
    assert args[-5:] == ['CFG', 'CKPT', '--launcher', 'pytorch', '--tta']


@pytest.mark.parametrize('script, tool, positional', [
    ('slurm_train.sh', 'train.py', ['CFG']),
    ('slurm_test.sh', 'test.py', ['CFG', 'CKPT']),
])
def test_slurm_scripts_exec_srun(tmp_path, script, tool, positional):
    fake_launcher(tmp_path, 'srun')
    path = f'{tmp_path}{os.pathsep}{os.environ["PATH"]}'
    shell, pid, args = run_script(script, 'PART', 'JOB', *positional,
                                  '--work-dir', 'W', PATH=path, GPUS='4',
                                  GPUS_PER_NODE='4', PYTHON='py')
    assert pid == shell
    assert args[:3] == ['-p', 'PART', '--job-name=JOB']
    assert '--ntasks=4' in args and '--gres=gpu:4' in args
    i = args.index('py')
    assert args[i + 1] == '-u' and args[i + 2].endswith(f'tools/{tool}')
    assert args[i + 3:] == [*positional, '--launcher', 'slurm', '--work-dir',
                            'W']


def descendants(pid):
    """The pids of every living process below ``pid``."""
    children = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if fields[0] != 'Z':
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except OSError:
        return False
    return fields[0] != 'Z'


@pytest.mark.skipif(sys.platform != 'linux', reason='reads /proc')
def test_sigterm_to_dist_train_ends_every_process(tmp_path, demo_root):
    # a real run (120 iterations), killed once both trainers are running
    proc = subprocess.Popen(
        ['bash', str(TOOLS / 'dist_train.sh'), str(ROOT / SEG_CFG), '2',
         '--work-dir', str(tmp_path / 'w'), '--cfg-options',
         *seg_data_overrides(demo_root)],
        cwd=tmp_path, env=tool_env(PYTHON=sys.executable),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.time() + 120
        started = []
        while time.time() < deadline and len(started) < 2:
            time.sleep(0.5)
            started = [p for p in descendants(proc.pid)
                       if 'train.py' in Path(f'/proc/{p}/cmdline').read_text()
                       .replace('\0', ' ')] if proc.poll() is None else []
            assert proc.poll() is None, 'dist_train.sh ended by itself'
        assert len(started) >= 2, 'the trainers did not start'
        # well into their start-up: the Runner has written its work dir
        while time.time() < deadline and not list((tmp_path / 'w').glob('*/*.log')):
            time.sleep(0.5)
        assert list((tmp_path / 'w').glob('*/*.log')), 'the trainers built no Runner'
        assert proc.poll() is None and all(map(alive, started))
        everything = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)  # to the script only, as Slurm's
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while time.time() < deadline and any(map(alive, everything)):
            time.sleep(0.5)
        assert not [p for p in everything if alive(p)]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
