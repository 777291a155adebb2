"""mmvit3 as OpenMMLab users install it: a wheel built from the repository
carries the configs, tools and model index where mim looks
(``mmvit3/.mim/``) and the license; installed into a fresh environment,
``mim search mmvit3`` lists every config with its metadata and
``mim train mmvit3 CONFIG`` trains one. The fresh environment borrows the
project environment's libraries (torch, mmdet, ...) through a path file,
so that only mmvit3 itself comes from the wheel."""
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from _helpers import ROOT, TIMEOUT, seg_data_overrides

CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'configs').rglob('*.py'))


def index_models():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    return [m for name in index['Import']
            for m in yaml.safe_load((ROOT / name).read_text())['Models']]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(ROOT), '--no-deps',
                           '--no-build-isolation', '-q', '-w', str(out)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob('mmvit3-*.whl'))


def test_the_wheel_carries_configs_tools_index_and_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    mim = 'mmvit3/.mim/'
    assert {mim + c for c in CONFIGS} <= names
    assert mim + 'model-index.yml' in names and mim + 'configs/metafile.yml' in names
    tools = {mim + p.relative_to(ROOT).as_posix()
             for p in (ROOT / 'tools').iterdir() if p.suffix in ('.py', '.sh')}
    assert tools <= names
    assert any(n.endswith('.dist-info/LICENSE') or '/licenses/LICENSE' in n for n in names)
    assert 'Apache License' in (ROOT / 'LICENSE').read_text()


def site_packages(python: Path) -> Path:
    return Path(subprocess.run([str(python), '-c', 'import sysconfig; '
                                'print(sysconfig.get_paths()["purelib"])'],
                               capture_output=True, text=True, check=True).stdout.strip())


def new_env(env: Path) -> Path:
    """A new virtual environment at ``env`` that sees the project
    environment's libraries (after its own); returns its python."""
    base = getattr(sys, '_base_executable', sys.executable)
    subprocess.run([base, '-m', 'venv', '--system-site-packages', str(env)], check=True,
                   timeout=TIMEOUT)
    python = env / 'bin' / 'python'
    (site_packages(python) / '_project_env.pth').write_text(
        sysconfig.get_paths()['purelib'] + '\n')
    return python


@pytest.fixture(scope='module')
def fresh(wheel, tmp_path_factory):
    """A new virtual environment with the wheel installed; the project
    environment's libraries are visible to it, its mmvit3 is not."""
    python = new_env(tmp_path_factory.mktemp('fresh') / 'env')
    subprocess.run([str(python), '-m', 'pip', 'install', '-q', '--no-deps', str(wheel)],
                   check=True, timeout=TIMEOUT)
    return python


def mim(python, *args, cwd):
    proc = subprocess.run([str(python), '-c', 'from mim.cli import cli; cli()', *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr


def test_mim_search_lists_every_config_from_a_wheel(fresh, tmp_path):
    pytest.importorskip('mim')
    proc = subprocess.run([str(fresh), '-c', 'import mmvit3; print(mmvit3.__file__)'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert str(fresh.parent.parent) in proc.stdout, proc.stdout + proc.stderr  # the wheel's
    rc, out = mim(fresh, 'search', 'mmvit3', cwd=tmp_path)
    assert rc == 0, out[-3000:]
    for model in index_models():
        assert f"config id: {model['Name']}" in out, model['Name']
    assert 'box_ap' in out.lower() and 'miou' in out.lower()


def test_mim_train_runs_a_config_from_a_wheel(fresh, tmp_path, demo_root):
    pytest.importorskip('mim')
    work = tmp_path / 'work'
    rc, out = mim(fresh, 'train', 'mmvit3', 'configs/demo/upernet_vit3_demo.py', '--gpus', '0',
                  '--work-dir', work, '--cfg-options', *seg_data_overrides(demo_root),
                  'train_cfg.max_iters=1', 'train_cfg.val_begin=100',
                  'default_hooks.checkpoint.interval=1', 'train_dataloader.batch_size=2',
                  'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
                  cwd=tmp_path)
    assert rc == 0 and 'Training finished successfully' in out, out[-3000:]
    assert (work / 'iter_1.pth').is_file()


def test_mim_finds_an_editable_install_and_pip_removes_what_setup_added(tmp_path):
    """tools/setup_env.sh's editable install and its link step, in a new
    environment: ``mim search`` lists every config; ``pip uninstall``
    removes the link and leaves the checkout as it was."""
    pytest.importorskip('mim')
    python = new_env(tmp_path / 'env')
    script = (ROOT / 'tools' / 'setup_env.sh').read_text()
    link_step = re.search(r'^"\$PYTHON" (-m mmvit3\.cli\.editable_install)$', script, re.M)[1]
    subprocess.run([str(python), '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                    '-e', str(ROOT)], check=True, timeout=TIMEOUT, capture_output=True)
    purelib = site_packages(python)
    rc, out = mim(python, 'search', 'mmvit3', cwd=tmp_path)
    assert rc != 0 and 'model-index.yml' in out  # what an editable install alone gives

    proc = subprocess.run([str(python), *link_step.split()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and 'linked' in proc.stdout, proc.stdout + proc.stderr
    assert (purelib / 'mmvit3').resolve() == ROOT / 'mmvit3'
    rc, out = mim(python, 'search', 'mmvit3', cwd=tmp_path)
    assert rc == 0, out[-3000:]
    for model in index_models():
        assert f"config id: {model['Name']}" in out, model['Name']
    # a second run changes nothing
    proc = subprocess.run([str(python), *link_step.split()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and 'already' in proc.stdout, proc.stdout + proc.stderr

    before = sorted(p.name for p in (ROOT / 'mmvit3').iterdir())
    subprocess.run([str(python), '-m', 'pip', 'uninstall', '-y', '-q', 'mmvit3'],
                   check=True, timeout=TIMEOUT, capture_output=True)
    assert not os.path.lexists(purelib / 'mmvit3')
    assert sorted(p.name for p in (ROOT / 'mmvit3').iterdir()) == before
    assert (ROOT / 'mmvit3' / '.mim' / 'configs').is_dir()
