#!/usr/bin/env bash
# Runs `srun ARGS...` under a hard time bound when a Slurm cluster answers, else reports skipped
# (exit 77). The local cluster (tools/slurm/local_cluster.sh start) is found through
# $SLURM_CONF, or $VOLT_SLURM_DIR/slurm.conf (default /tmp/volt-slurm).
#   srun_or_skip.sh SECONDS srun-args... program args...
set -uo pipefail
bound="$1"; shift
skip() { echo "SKIPPED: $*"; exit 77; }
[ "${VOLT_WITH_MPI:-ON}" = "OFF" ] && skip "this build has no MPI, so srun ranks cannot talk to each other"
if [ -z "${SLURM_CONF:-}" ] && [ -f "${VOLT_SLURM_DIR:-/tmp/volt-slurm}/slurm.conf" ]; then
  export SLURM_CONF="${VOLT_SLURM_DIR:-/tmp/volt-slurm}/slurm.conf"
fi
command -v srun >/dev/null && command -v sinfo >/dev/null || skip "no srun/sinfo (apt-get install slurm-wlm)"
state="$(timeout 5 sinfo -h -o '%T' 2>/dev/null | head -n 1)"
case "$state" in
  idle*|mixed*|allocated*|completing*) ;;
  *) skip "no Slurm cluster answers (state '${state}'); start one with tools/slurm/local_cluster.sh start" ;;
esac
mpi=()
mpi_types="$(srun --mpi=list 2>&1 || true)"  # captured: `srun | grep -q` fails under pipefail when grep stops early
grep -qw pmix <<<"$mpi_types" && mpi=(--mpi=pmix)
# Environment variables of mpirun must not leak into srun's tasks.
unset OMPI_COMM_WORLD_SIZE OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_LOCAL_RANK OMPI_COMM_WORLD_LOCAL_SIZE
exec timeout -k 5 "$bound" srun "${mpi[@]}" --kill-on-bad-exit=0 "$@"
