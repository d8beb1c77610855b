#!/usr/bin/env bash
# Multi-node training with torchrun, without a scheduler. Run the same command on every node, with its
# NODE_RANK and the same RUN_ID (the shared run directory's name):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 GPUS_PER_NODE=8 RUN_ID=exp1 scripts/torchrun.sh experiment=santacoder_1b
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 GPUS_PER_NODE=8 RUN_ID=exp1 scripts/torchrun.sh experiment=santacoder_1b
# TRAINER picks the trainer config (default ddp; ddp_cpu tries it on CPU processes); PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-1}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
TRAINER=${TRAINER:-ddp}
PYTHON=${PYTHON:-python}
if [[ -z "${RUN_ID:-}" ]]; then
    if (( NNODES > 1 )); then
        echo "error: set RUN_ID to the same value on every node (it names the shared run directory)" >&2
        exit 2
    fi
    RUN_ID=$(date +%Y-%m-%d_%H-%M-%S)
fi
export SANTACODER_RUN_ID=$RUN_ID

exec "$PYTHON" -m torch.distributed.run \
    --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$GPUS_PER_NODE" \
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
    train.py trainer="$TRAINER" trainer.num_nodes="$NNODES" trainer.devices="$GPUS_PER_NODE" "$@"
