#!/usr/bin/env bash
# Train on a slurm cluster (mmengine's slurm launcher reads the SLURM_* variables):
#   GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
#
# Preemptible runs. srun asks slurm for SIGUSR1 SIGNAL_LEAD seconds (default 120) before the
# time limit; on it, or on the SIGTERM of a preemption, every task saves a checkpoint at the
# same iteration and exits with 75. Inside a batch job the script then requeues the job
# (scontrol requeue; REQUEUE=0 turns it off), and when the job starts again it resumes from
# WORK_DIR's latest checkpoint: a WORK_DIR with a checkpoint always resumes. Submit with
#   sbatch --requeue -N 2 --gres=gpu:8 --ntasks-per-node=8 --time=24:00:00 \
#       --wrap "GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR"
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
SIGNAL_LEAD=${SIGNAL_LEAD:-120}
REQUEUE=${REQUEUE:-1}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREEMPTED=75

EXTRA=("${@:5}")
RESUME=()
if [ -s "$WORK_DIR/last_checkpoint" ] && [[ " ${EXTRA[*]-} " != *" --resume"* ]]; then
    echo "slurm_train.sh: resuming from $(cat "$WORK_DIR/last_checkpoint")" >&2
    RESUME=(--resume)
fi

# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    --signal=USR1@"$SIGNAL_LEAD" \
    $SRUN_ARGS "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
    --launcher=slurm "${RESUME[@]}" "${EXTRA[@]}" &
STEP=$!
# A preemption signals this script too: keep waiting while the tasks save.
trap 'echo "slurm_train.sh: stop signal received; waiting for the tasks to save" >&2' TERM USR1
set +e
while :; do
    wait "$STEP"
    STATUS=$?
    kill -0 "$STEP" 2>/dev/null || break
done
if [ "$STATUS" -eq "$PREEMPTED" ]; then
    if [ "$REQUEUE" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
        echo "slurm_train.sh: preempted; requeueing job $SLURM_JOB_ID, it resumes from $WORK_DIR" >&2
        scontrol requeue "$SLURM_JOB_ID"
    else
        echo "slurm_train.sh: preempted; run the same command again to resume from $WORK_DIR" >&2
    fi
fi
exit "$STATUS"
