"""tools/setup_env.sh picks the environment it installs into: PYTHON's
virtual or conda environment when it has one, otherwise the project's
.venv (so a Python that refuses global installs, PEP 668, still works),
unless MMVIT3_VENV=0. ``--python`` prints the choice without installing."""
import os
import subprocess
import sys

from _helpers import ROOT

BASE = os.path.join(sys.base_prefix, 'bin', 'python3')  # outside any venv


def chosen(python, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ('CONDA_PREFIX', 'VIRTUAL_ENV', 'MMVIT3_VENV')}
    out = subprocess.run(['bash', str(ROOT / 'tools' / 'setup_env.sh'), '--python'],
                         env={**environ, 'PYTHON': str(python), **env},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60, check=True).stdout
    return out.strip().splitlines()[-1]


def test_outside_an_environment_the_project_venv(tmp_path):
    assert chosen(BASE) == str(ROOT / '.venv' / 'bin' / 'python')
    assert chosen(BASE, MMVIT3_VENV='0') == BASE


def test_inside_a_venv_or_conda_env_that_one(tmp_path):
    subprocess.run([BASE, '-m', 'venv', '--without-pip', str(tmp_path / 'v')],
                   check=True, timeout=120)
    venv_python = tmp_path / 'v' / 'bin' / 'python'
    assert chosen(venv_python) == str(venv_python)
    assert chosen(BASE, CONDA_PREFIX=sys.base_prefix) == BASE
