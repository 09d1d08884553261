#!/usr/bin/env bash
# Seed-CNN training on the GPU, Volt (bench_train_gpu) and PyTorch (pytorch_seed_cnn.py --suite) in one
# run on the same machine: raw logs go to --out, then bench/compare.py prints the table of ratios.
# Usage: bench/run_gpu_bench.sh [--build DIR] [--batch-sizes 128,512,2048] [--precisions 32,16-mixed]
#          [--out DIR] [--pytorch-suite best|eager] [--python PY] [--steps N] [--warmup N]
#          [--budget SECONDS] [--time-limit SECONDS] [--pytorch-device cuda|cpu]
# --build defaults to build-gpu (tests/gpu_carry.sh pack), else build. --budget bounds PyTorch's suite
# (default 300 s; it is killed a grace period past it, a compile that ran over: 120 s, or 30 s under a
# --time-limit below 400 s). --time-limit (default 540 s, so that one call fits the device tool's
# 600 s) bounds the whole run: Volt's call starts only while one configuration can end with the grace + 30 s still
# left for PyTorch, and PyTorch's budget shrinks to what is left. A side that cannot run here (no binary, no torch, no GPU) is reported and
# skipped; the exit status is 1 only when a side that could run failed or did not fit.
# VOLT_COMMIT names the commit in results-row.md where git cannot (the device machine's copy; else
# BUILD/volt_commit, which tests/gpu_carry.sh pack writes).
# VOLT_TIMEOUT: seconds per configuration of the bench_train_gpu call (default 120). Its timeouts run --foreground: a
# caller's own timeout (tests/gpu_session.sh) then ends this script's programs with it.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="" batches=128,512,2048 precisions=32,16-mixed out="" suite=best py=${PYTHON:-python3}
steps="" warmup="" budget=300 limit=540 device=cuda grace=120
volt_timeout=${VOLT_TIMEOUT:-120}  # seconds per configuration (one batch size and precision)
usage() { sed -n '4,6s/^# //p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case $1 in
    --build) build=$2 ;;
    --batch-sizes) batches=$2 ;;
    --precisions) precisions=$2 ;;
    --out) out=$2 ;;
    --pytorch-suite) suite=$2 ;;
    --python) py=$2 ;;
    --steps) steps=$2 ;;
    --warmup) warmup=$2 ;;
    --budget) budget=$2 ;;
    --time-limit) limit=$2 ;;
    --pytorch-device) device=$2 ;;
    *) usage ;;
  esac
  shift 2
done
case $suite in best|eager) ;; *) usage ;; esac
[[ $budget =~ ^[0-9]+$ && $limit =~ ^[0-9]+$ ]] || usage
[ "$limit" -lt 400 ] && grace=30
torch_min=$((grace + 30))  # the least time PyTorch's side is started with
if [ -z "$build" ]; then
  build=$root/build
  [ -x "$root/build-gpu/bench/bench_train_gpu" ] && build=$root/build-gpu
fi
build=$(realpath -m "$build")
# (on the device machine only what lands under $OUT comes back)
out=$(realpath -m "${out:-${OUT:-$root/bench-out}/gpu-$(date -u +%Y%m%dT%H%M%SZ)}")
mkdir -p "$out" || exit 1
counts=(${steps:+--steps "$steps"} ${warmup:+--warmup "$warmup"})
volt_state="" torch_state="" failed=0

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "# $(date -u +%F) GPU: ${gpu:-none visible (nvidia-smi)}; build $build; logs $out"

# Volt: one call for every batch size and precision (one CUDA context and cuDNN/cuBLAS start-up, not
# one per configuration), with the carried build's library path. It starts only while one
# configuration's VOLT_TIMEOUT fits before PyTorch's share; it may take VOLT_TIMEOUT per configuration
# or what is left, whichever is less (its RESULT lines print as each configuration ends, so a cut
# keeps those). "No GPU" (exit 77) is a skip.
exe=$build/bench/bench_train_gpu
. "$root/tests/gpu_env.sh"
volt_unpack "$build"  # a carried build's executables travel compressed (tests/gpu_carry.sh)
if [ ! -x "$exe" ]; then
  volt_state="skipped: no $exe (cmake --build $build --target bench_train_gpu)"
else
  (
    PYTHON=$py volt_gpu_env "$build" "$exe" || exit 3
    configs=$(( $(tr ',' '\n' <<<"$batches" | grep -c .) * $(tr ',' '\n' <<<"$precisions" | grep -c .) ))
    left=$((limit - torch_min - SECONDS))
    if [ "$left" -lt "$volt_timeout" ]; then
      echo "bench_train_gpu --batch-size $batches --precision $precisions: not run, --time-limit $limit s"
      exit 124
    fi
    cap=$((volt_timeout * configs))
    [ "$cap" -gt "$left" ] && cap=$left
    timeout --foreground -k 10 "$cap" "$exe" --batch-size "$batches" --precision "$precisions" "${counts[@]}" </dev/null
    rc=$?
    [ $rc = 0 ] || [ $rc = 77 ] || echo "bench_train_gpu --batch-size $batches --precision $precisions: exit $rc"
    exit $rc
  ) 2>&1 | tee "$out/volt.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) volt_state="ran" ;;
    77) volt_state="skipped: bench_train_gpu found no GPU (exit 77)" ;;
    3) volt_state="FAILED: $exe does not load (ldd above)"; failed=1 ;;
    124|137) volt_state="FAILED: bench_train_gpu ran past its time (${volt_timeout} s a configuration) or did not fit"
             failed=1 ;;
    *) volt_state="FAILED: a bench_train_gpu call exited $rc (see $out/volt.log)"; failed=1 ;;
  esac
fi

# PyTorch: the whole suite in one process (CUDA context, cuDNN and compile caches shared).
probe=$(timeout --foreground -k 10 120 "$py" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' \
        </dev/null 2>/dev/null)
if [ -z "$probe" ]; then
  torch_state="skipped: torch is not importable with $py (--python PY)"
elif [ "$device" = cuda ] && [ "${probe#* }" != True ]; then
  torch_state="skipped: torch ${probe% *} sees no CUDA device (--pytorch-device cpu times the CPU)"
elif [ "$limit" -lt $((SECONDS + torch_min)) ]; then
  torch_state="FAILED: not run, --time-limit $limit s leaves under $torch_min s at ${SECONDS} s"; failed=1
else
  [ "$budget" -lt $((limit - SECONDS - grace)) ] || budget=$((limit - SECONDS - grace))
  timeout --foreground -k 10 "$((budget + grace))" "$py" "$root/bench/pytorch_seed_cnn.py" --device "$device" \
    --suite "$suite" --batch-size "$batches" --precisions "$precisions" --budget "$budget" "${counts[@]}" \
    </dev/null 2>&1 | tee "$out/pytorch.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) torch_state="ran (torch ${probe% *})" ;;
    124|137) torch_state="FAILED: the suite ran past --budget $budget + $grace s (partial log kept)"; failed=1 ;;
    *) torch_state="FAILED: exit $rc, see $out/pytorch.log (its RESULT lines still count)"
       failed=1 ;;
  esac
fi

logs=(/dev/null)  # never stdin
for f in "$out/volt.log" "$out/pytorch.log"; do [ -f "$f" ] && logs+=("$f"); done
commit=${VOLT_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || cat "$build/volt_commit" 2>/dev/null ||
                        echo unknown)}
echo
python3 "$root/bench/compare.py" "${logs[@]}" | tee "$out/table.md" || failed=1
python3 "$root/bench/compare.py" --markdown-row "$(date -u +%F)" "${gpu:-$device}" "$commit" "${logs[@]}" \
  >"$out/results-row.md" || failed=1
echo
echo "Volt:    $volt_state"
echo "PyTorch: $torch_state"
echo "logs, table.md and results-row.md (rows for bench/RESULTS.md) in $out"
exit $failed
