#!/usr/bin/env bash
# Sets up mmvit3 and everything it needs. Safe to re-run: it only does what is
# missing, and a re-run with nothing changed takes a few seconds.
#
#   0. the environment: PYTHON's active virtual / conda environment if it has
#      one; otherwise (a system or pyenv Python, which may refuse installs:
#      PEP 668) a project-local .venv made from PYTHON with
#      --system-site-packages, so that an installed (CUDA) torch is kept.
#      MMVIT3_VENV=0 installs into PYTHON's own site-packages instead.
#      `tools/setup_env.sh --python` prints the interpreter it uses.
#   1. torch: keeps the one installed (a CUDA build on a GPU machine);
#      installs the CPU build ${TORCH_VERSION} only where there is none.
#   2. mmcv 2.1.0 with its compiled ops, built from source against that torch
#      (no wheels exist for current torch): needs setuptools<81 (pkg_resources)
#      and --no-build-isolation. Takes 7-20 minutes on 2 cores, once; pip
#      caches the built wheel.
#   3. mmvit3 itself (editable) with mmdet, mmsegmentation and the test tools
#      (openmim without its dependency on opendatalab / openxlab).
#
# Environment: PYTHON (default python3), MMVIT3_VENV (default 1),
# TORCH_VERSION (default 2.13.0), MAX_JOBS (parallel compile jobs for mmcv).
set -euo pipefail

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
MMCV_VERSION=2.1.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAMP="$ROOT/.setup-stamp"
VENV="$ROOT/.venv"

# 0. which environment: PYTHON's virtual / conda one, else the project's .venv
in_env=$("$PYTHON" -c 'import os, sys
conda = os.environ.get("CONDA_PREFIX")
print(int(sys.prefix != sys.base_prefix or (conda is not None and
          os.path.realpath(conda) == os.path.realpath(sys.prefix))))')
if [[ "$in_env" == 0 && "${MMVIT3_VENV:-1}" != 0 ]]; then
    if [[ "${1:-}" != --python && ! -x "$VENV/bin/python" ]]; then
        echo "[setup] $PYTHON is in no virtual or conda environment: creating $VENV (its site-packages visible, so an installed torch is kept)"
        if ! "$PYTHON" -m venv --system-site-packages "$VENV"; then
            rm -rf "$VENV"
            echo "[setup] could not create $VENV: install your Python's venv module (Debian / Ubuntu: apt install python3-venv), or activate an environment of your own and re-run" >&2
            exit 1
        fi
    fi
    PYTHON="$VENV/bin/python"
fi
if [[ "${1:-}" == --python ]]; then
    echo "$PYTHON"
    exit 0
fi
if [[ "$PYTHON" == "$VENV/bin/python" ]]; then
    echo "[setup] installing into $VENV (run the tools with .venv/bin/python, or after source .venv/bin/activate)"
fi
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check "$@"; }

# Re-run with nothing changed: the stamp records the inputs of the last
# successful set-up; the import check catches an environment changed since.
fingerprint=$( { "$PYTHON" -c 'import sys; print(sys.executable)'; cat "$ROOT/pyproject.toml" "$0"; } | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$fingerprint" ]] &&
    "$PYTHON" - <<'EOF' 2>/dev/null
import mmcv, mmdet, mmseg, mmvit3, torch
from mmcv.ops import nms
assert mmcv.__version__.startswith('2.1.')
EOF
then
    echo "[setup] up to date ($("$PYTHON" -c 'import torch, mmcv; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}")'))"
    exit 0
fi
rm -f "$STAMP"

# 1. torch
if "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "[setup] keeping the installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
    echo "[setup] no torch found: installing the CPU build torch==$TORCH_VERSION"
    pip_install "torch==$TORCH_VERSION"
fi

# 2. mmcv with ops, built against that torch
if "$PYTHON" - <<EOF 2>/dev/null
import mmcv
from mmcv.ops import nms
assert mmcv.__version__ == '$MMCV_VERSION'
EOF
then
    echo "[setup] mmcv $MMCV_VERSION with ops is installed"
else
    echo "[setup] building mmcv $MMCV_VERSION with its ops against the installed torch (about 7 minutes on 2 cores, once)"
    # mmcv's setup.py needs pkg_resources (gone from setuptools 81); torch 2.13 needs setuptools>=77.
    pip_install 'setuptools>=77,<81' wheel ninja
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} pip_install --no-build-isolation "mmcv==$MMCV_VERSION"
fi

# 3. mmvit3, mmdet, mmsegmentation and the test tools
echo "[setup] installing mmvit3 (editable) with mmdet and mmsegmentation"
pip_install -e "$ROOT[tests]"
# mim looks in <site-packages>/mmvit3/.mim, which an editable install leaves
# empty: link the checkout's package there (pip uninstall removes the link)
"$PYTHON" -m mmvit3.cli.editable_install
# openmim (for the tests of mim's doors) without its declared dependency
# opendatalab, which mim does not import and whose openxlab pins and downgrades
# setuptools and requests; what mim does import comes with the tests extra
pip_install --no-deps 'openmim==0.3.9'

"$PYTHON" - <<'EOF'
import mmcv, mmdet, mmseg, mmvit3, torch
from mmcv.ops import nms
print(f'[setup] ready: torch {torch.__version__} (CUDA {torch.cuda.is_available()}), '
      f'mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, '
      f'mmvit3 {mmvit3.__version__} registered in {mmvit3.REGISTERED_SCOPES}')
EOF
echo "$fingerprint" > "$STAMP"
