#!/usr/bin/env bash
# Runs a command where at least N GPUs are visible (nvidia-smi's list, or $VOLT_EMU_DEVICES in an
# emulated build) and the command exists; otherwise reports the test as skipped (exit 77).
#   need_gpus.sh N command args...
set -uo pipefail
needed="$1"; shift
if [ -n "${VOLT_EMU_DEVICES:-}" ]; then
  n="$VOLT_EMU_DEVICES"
elif command -v nvidia-smi >/dev/null; then
  n="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')"
else
  echo "SKIPPED: no nvidia-smi to count the GPUs ($needed needed)"; exit 77
fi
if [ "${n:-0}" -eq 0 ] && [ -n "${VOLT_REQUIRE_GPU:-}" ] && [ "${VOLT_REQUIRE_GPU}" != 0 ]; then
  # As require_gpu(): on the GPU machine a broken driver must fail, not pass as "skipped".
  echo "FAILED: VOLT_REQUIRE_GPU is set but no GPU is visible"; exit 1
fi
[ "${n:-0}" -ge "$needed" ] || { echo "SKIPPED: ${n:-0} GPU(s) visible, $needed needed"; exit 77; }
command -v "$1" >/dev/null || { echo "SKIPPED: no $1 on this machine"; exit 77; }
exec "$@"
