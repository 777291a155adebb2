#!/usr/bin/env bash
# Distributed testing: torchrun (python -m torch.distributed.run) starts
# NPROC processes, one per GPU; without CUDA, CPU processes with the gloo
# backend (chosen by tools/test.py). PYTHON names the interpreter (default
# python).
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [tools/test.py args...]
# One machine: a free port is picked; several nodes: NNODES, NODE_RANK,
# MASTER_ADDR and PORT, as tools/dist_train.sh.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 CONFIG CHECKPOINT NPROC [tools/test.py args...]" >&2
    exit 1
fi

CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
TOOLS=$(dirname "$0")
if [[ $NNODES == 1 && -z ${PORT:-} && -z ${MASTER_ADDR:-} ]]; then
    # one machine: torchrun picks a free port itself, so two jobs never collide
    RENDEZVOUS=(--standalone)
else
    RENDEZVOUS=(--nnodes="$NNODES" --node_rank="$NODE_RANK"
                --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}")
fi

# exec: torchrun takes this shell's process, so a scheduler's SIGTERM to
# the script reaches torchrun, which stops every process it started
export PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m torch.distributed.run \
    "${RENDEZVOUS[@]}" \
    --nproc_per_node="$NPROC" \
    "$TOOLS/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
