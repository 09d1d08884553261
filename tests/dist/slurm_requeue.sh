#!/usr/bin/env bash
# Pre-emption end to end under the local Slurm cluster: `srun -n 2 cnn_train` gets SIGUSR1 (scancel
# --signal=USR1, as sbatch --signal=SIGUSR1@90 would send it) while it trains; every rank must stop
# at the same step, rank 0 writes hpc_ckpt.ckpt and calls the requeue command (recorded through
# $VOLT_REQUEUE_CMD: a real `scontrol requeue` needs an sbatch job), and all exit 0. The rerun as
# the requeued job ($SLURM_RESTART_COUNT=1) resumes from the checkpoint without flags and ends with
# weights bit-identical to an uninterrupted 2-rank run.
#   slurm_requeue.sh SRUN_OR_SKIP CNN_TRAIN WORK_DIR
set -uo pipefail
srun_or_skip="$1"; cnn_train="$2"; work="$3"
rm -rf "$work"; mkdir -p "$work"
if [ -z "${SLURM_CONF:-}" ] && [ -f "${VOLT_SLURM_DIR:-/tmp/volt-slurm}/slurm.conf" ]; then
  export SLURM_CONF="${VOLT_SLURM_DIR:-/tmp/volt-slurm}/slurm.conf"  # as srun_or_skip.sh finds it
fi
args=(--dataset synthetic --train-samples 1536 --val-samples 64 --test-samples 64 --batch-size 32 --epochs 3
      --threads 1 --num-workers 1 --no-progress --seed 3)
fail() { echo "slurm_requeue: FAILED: $*" >&2; exit 1; }

# The uninterrupted run.
"$srun_or_skip" 300 -n 2 "$cnn_train" "${args[@]}" --log-dir "$work/ref" --save "$work/ref.vt" > "$work/ref.log" 2>&1
rc=$?
cat "$work/ref.log"
[ "$rc" -eq 77 ] && exit 77
[ "$rc" -eq 0 ] || fail "the uninterrupted run exited $rc"

# The pre-empted run.
cat > "$work/fake_scontrol.sh" <<EOS
#!/bin/sh
echo "requeue \$*" >> "$work/requeue_calls.txt"
EOS
chmod +x "$work/fake_scontrol.sh"
export VOLT_REQUEUE_CMD="$work/fake_scontrol.sh"
"$srun_or_skip" 300 -n 2 --job-name=volt_requeue_test "$cnn_train" "${args[@]}" --log-dir "$work/job" \
  --save "$work/job.vt" > "$work/job.log" 2>&1 &
pid=$!
# Signal once the first epoch has ended (its last.ckpt is written): the signal lands in the second
# of three epochs of 24 steps a rank, however fast or slow (sanitized, loaded) the machine runs them.
for _ in $(seq 1 3000); do
  [ -f "$work/job/lightning_logs/version_0/checkpoints/last.ckpt" ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
job=$(squeue -h -n volt_requeue_test -o %i | head -n 1)
[ -n "$job" ] || { wait $pid; cat "$work/job.log"; fail "the job finished before it could be signalled"; }
scancel --signal=USR1 "$job" || fail "scancel --signal=USR1 $job failed"
wait $pid
rc=$?
cat "$work/job.log"
[ "$rc" -eq 0 ] || fail "the pre-empted run exited $rc"
grep -q "Pre-empted (SIGUSR1) at epoch" "$work/job.log" || fail "no pre-emption message"
[ -f "$work/job/hpc_ckpt.ckpt" ] || fail "no $work/job/hpc_ckpt.ckpt"
[ ! -f "$work/job.vt" ] || fail "the pre-empted run went on to the end"
grep -qx "requeue $job" "$work/requeue_calls.txt" || fail "requeue was not called once for job $job: $(cat "$work/requeue_calls.txt" 2>/dev/null)"
[ "$(wc -l < "$work/requeue_calls.txt")" -eq 1 ] || fail "requeue was called more than once (every rank?)"

# The requeued job: no flags, resumes from the checkpoint. A requeued job keeps its id; this rerun
# is a new srun allocation, so its tasks are given the first one's id (the checkpoint is only
# resumed by the job that wrote it).
SLURM_RESTART_COUNT=1 "$srun_or_skip" 300 -n 2 env SLURM_JOB_ID="$job" "$cnn_train" "${args[@]}" \
  --log-dir "$work/job" --save "$work/job.vt" > "$work/rerun.log" 2>&1
rc=$?
cat "$work/rerun.log"
[ "$rc" -eq 0 ] || fail "the requeued run exited $rc"
grep -q "Resumed from $work/job/hpc_ckpt.ckpt" "$work/rerun.log" || fail "the requeued run did not resume from hpc_ckpt.ckpt"
cmp "$work/ref.vt" "$work/job.vt" || fail "the resumed run's weights differ from the uninterrupted run's"
[ ! -f "$work/job/hpc_ckpt.ckpt" ] || fail "hpc_ckpt.ckpt was left behind after the run completed"
echo "slurm_requeue: passed (job $job pre-empted, requeued, resumed bit-identical)"
