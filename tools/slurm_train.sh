#!/usr/bin/env bash
# Training on a Slurm cluster: srun starts one task per GPU, and
# tools/train.py --launcher slurm reads its rank from Slurm's environment.
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py args...]
# GPUS (total, default 8), GPUS_PER_NODE (default 8), CPUS_PER_TASK (data
# loading workers + 1, default 5) and SRUN_ARGS (extra srun options, e.g.
# "--time=3-00:00:00") and PYTHON (default python) are read from the environment.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [tools/train.py args...]" >&2
    exit 1
fi

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS=$(dirname "$0")

export PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}"
# exec: a SIGTERM to the script reaches srun, which ends the job's tasks
# shellcheck disable=SC2086  # SRUN_ARGS holds several options
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "${PYTHON:-python}" -u "$TOOLS/train.py" "$CONFIG" --launcher slurm "${@:4}"
