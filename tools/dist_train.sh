#!/usr/bin/env bash
# Distributed training: torchrun (python -m torch.distributed.run) starts
# NPROC processes, one per GPU; without CUDA, CPU processes with the gloo
# backend (chosen by tools/train.py). PYTHON names the interpreter (default
# python).
#   tools/dist_train.sh CONFIG NPROC [tools/train.py args...]
# One machine: a free port is picked (PORT / MASTER_ADDR pin them). Several
# nodes: run it on each with NNODES, NODE_RANK (0 .. NNODES-1), MASTER_ADDR
# (node 0's address) and PORT set alike. Slurm: tools/slurm_train.sh.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG NPROC [tools/train.py args...]" >&2
    exit 1
fi

CONFIG=$1
NPROC=$2
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
    "$TOOLS/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
