#!/usr/bin/env bash
# Runs a job that must fail: passes when it exits non-zero before the hard bound, and its output
# matches a pattern (the message naming the failed rank). A run past the bound (a hang) fails.
#   expect_failure.sh SECONDS REGEX command args...
set -uo pipefail
bound="$1"; pattern="$2"; shift 2
start=$(date +%s)
out="$(timeout -k 5 "$bound" "$@" 2>&1)"
rc=$?
took=$(( $(date +%s) - start ))
printf '%s\n' "$out"
echo "expect_failure: exit status $rc after ${took} s (bound ${bound} s)"
# Here-strings, not pipes: under pipefail, `printf | grep -q` fails when grep stops reading early.
if grep -q '^SKIPPED:' <<<"$out"; then exit 77; fi
# timeout exits 124 (137 when it had to SIGKILL); a job whose rank died of SIGKILL may also exit
# 137, so the elapsed time decides.
if [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ "$took" -ge "$bound" ]; }; then
  echo "expect_failure: FAILED: the job hung until the outer timeout" >&2; exit 1
fi
if [ "$rc" -eq 0 ]; then echo "expect_failure: FAILED: the job exited 0" >&2; exit 1; fi
if grep -q 'comm_fault: finished' <<<"$out"; then
  echo "expect_failure: FAILED: the job ran to the end" >&2; exit 1
fi
if ! grep -Eq "$pattern" <<<"$out"; then
  echo "expect_failure: FAILED: no line matches /$pattern/" >&2; exit 1
fi
echo "expect_failure: passed"
