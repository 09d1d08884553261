#!/usr/bin/env bash
# Coverage-guided fuzzing of Volt's readers of untrusted bytes (tests/fuzz/fuzz_targets.h) with
# libFuzzer, under AddressSanitizer and UndefinedBehaviorSanitizer. Needs clang (and libomp-dev).
#
#   bash tools/fuzz.sh [--seconds N] [TARGET...]     (default: every target, 60 s each)
#
# Builds build-fuzz/ (CPU only, -DVOLT_FUZZ=ON), starts each target's corpus (build-fuzz/corpus/T)
# from its seeds (fuzz_replay T --write-seeds), and runs build-fuzz/tests/fuzz_T for N seconds. A
# crash, sanitizer report, escaped exception or violated property stops the target and leaves the
# input in build-fuzz/findings/T/; reproduce it with build-fuzz/tests/fuzz_T FILE, or in any build
# with fuzz_replay T FILE (CTest's fuzz/ tests replay seeds and mutations, not these corpora).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds)
      # libFuzzer reads a non-number as 0, which is no time limit at all
      [[ ${2:-} =~ ^[1-9][0-9]{0,6}$ ]] || { echo "fuzz.sh: --seconds takes a whole number of seconds >= 1" >&2; exit 2; }
      seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
known=" tensor_file checkpoint idx cifar image tar cli "
for t in "${targets[@]}"; do
  [[ $known == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (targets:$known)" >&2; exit 2; }
done
command -v clang++ >/dev/null || { echo "fuzz.sh: needs clang (apt-get install clang libomp-dev)" >&2; exit 2; }
[ ${#targets[@]} -gt 0 ] || read -ra targets <<<"$known"

build=build-fuzz
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DVOLT_CUDA=OFF -DVOLT_FUZZ=ON -DVOLT_BUILD_BENCH=OFF -DVOLT_BUILD_TOOLS=OFF \
  -DVOLT_SANITIZE=address,undefined,fuzzer-no-link >/dev/null
cmake --build "$build" -j "$(nproc)" --target fuzz_replay $(printf 'fuzz_%s ' "${targets[@]}")

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t" findings="$build/findings/$t"
  mkdir -p "$corpus" "$findings"
  "$build/tests/fuzz_replay" "$t" --write-seeds "$corpus"
  echo "== fuzz_$t: $seconds s"
  if ! "$build/tests/fuzz_$t" "$corpus" -max_total_time="$seconds" -artifact_prefix="$findings/" \
      -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 2>"$build/fuzz_$t.log"; then
    status=1
    echo "fuzz_$t FOUND A FAILURE: $(ls "$findings" | head -3 | tr '\n' ' ') (log: $build/fuzz_$t.log)"
    grep -m3 -E "ERROR|runtime error|property violated|escaped" "$build/fuzz_$t.log" || true
  fi
  grep -E "^stat::number_of_executed_units|^#[0-9]+.*DONE" "$build/fuzz_$t.log" | tail -2 || true
done
exit $status
