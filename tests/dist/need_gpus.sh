#!/usr/bin/env bash
# Runs a command where at least N GPUs are visible (nvidia-smi's list, or $VOLT_EMU_DEVICES in an
# emulated build) and the command exists; otherwise reports the test as skipped (exit 77).
#   need_gpus.sh N command args...
set -uo pipefail
needed="$1"; shift
n="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')"
[ -n "${VOLT_EMU_DEVICES:-}" ] && n="$VOLT_EMU_DEVICES"
[ "${n:-0}" -ge "$needed" ] || { echo "SKIPPED: ${n:-0} GPU(s) visible, $needed needed"; exit 77; }
command -v "$1" >/dev/null || { echo "SKIPPED: no $1 on this machine"; exit 77; }
exec "$@"
