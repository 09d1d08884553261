#!/usr/bin/env bash
# Runs a job that must succeed: passes when it exits 0 within the hard bound and its output matches
# every pattern given before `--`. Exit 77 (skipped) passes through, as does a SKIPPED: line.
#   expect_success.sh SECONDS REGEX... -- command args...
set -uo pipefail
bound="$1"; shift
patterns=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do patterns+=("$1"); shift; done
shift
out="$(timeout -k 5 "$bound" "$@" 2>&1)"
rc=$?
printf '%s\n' "$out"
# Here-strings, not pipes: under pipefail, `printf | grep -q` fails when grep stops reading early.
if [ "$rc" -eq 77 ] || grep -q '^SKIPPED:' <<<"$out"; then exit 77; fi
if [ "$rc" -ne 0 ]; then echo "expect_success: FAILED: exit status $rc" >&2; exit 1; fi
for p in "${patterns[@]}"; do
  if ! grep -Eq "$p" <<<"$out"; then echo "expect_success: FAILED: no line matches /$p/" >&2; exit 1; fi
done
echo "expect_success: passed"
