#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests (tests/test_cuda.py; the CUDA
# cases of tests/test_mixed_precision.py need mmdet too), then the GPU benchmark
# (tools/gpu_benchmark.py); everything goes to OUT (default
# work_dirs/gpu_check): tests.log, gpu_benchmark.json / .md.
#   bash tools/gpu_check.sh            # needs torch with CUDA, mmengine, mmcv(-lite), pytest
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-work_dirs/gpu_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else
    print("gpu_check.sh: no CUDA GPU is available", file=sys.stderr) or 2)'
status=0
"$PYTHON" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" || status=1
"$PYTHON" tools/gpu_benchmark.py --out "$OUT" || status=1
exit $status
