#!/usr/bin/env bash
# Train on GPUS processes per node with torchrun (any number of nodes):
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on each node
# Without CUDA the processes use the gloo backend on the CPU (tnt_mm/utils/dist.py).
# Preemption: SIGTERM or SIGUSR1 to this script goes to torchrun, which forwards it to every
# worker; they save a checkpoint at the same iteration and stop, and the script exits with 75.
# torchrun kills workers that take longer than GRACE seconds (default 60). Rerun with --resume.
set -euo pipefail
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
GRACE=${GRACE:-60}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREEMPTED=75

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout="$GRACE" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}" &
TORCHRUN=$!
SIGNALLED=""
forward() { SIGNALLED=$1; kill -s "$1" "$TORCHRUN" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward USR1' USR1
trap 'forward INT' INT
# `wait` returns early when a trapped signal arrives; wait again until torchrun has exited
set +e
while :; do
    wait "$TORCHRUN"
    STATUS=$?
    kill -0 "$TORCHRUN" 2>/dev/null || break
done
# torchrun reports a worker that stopped on a signal as a failure (1); say it was preempted
if [ -n "$SIGNALLED" ] && [ "$STATUS" -ne 0 ]; then
    echo "dist_train.sh: stopped by SIG$SIGNALLED; continue with the same command and --resume" >&2
    exit $PREEMPTED
fi
exit "$STATUS"
