#!/usr/bin/env bash
# Seed-CNN CPU training benchmark, Volt next to PyTorch on the same machine in one run.
# Usage: bench/run_cpu_bench.sh [--threads 1,2] [--batch-size 128] [--steps 20] [--rounds 2]
# PYTHON selects the interpreter that has torch (default python3). Each (threads) setting runs
# Volt and PyTorch alternately for --rounds rounds and reports the best of each, then the ratio.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads=1,2 batch=128 steps=20 rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "usage: $0 [--threads 1,2] [--batch-size 128] [--steps 20] [--rounds 2]" >&2; exit 2 ;;
  esac
done
build="${BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target bench_train_gpu >/dev/null
py="${PYTHON:-python3}"
have_torch=1
"$py" -c "import torch" 2>/dev/null || have_torch=0
echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
best() { awk -v k="$1" '{for(i=1;i<=NF;i++) if($i ~ "^"k"=") {split($i,a,"="); if(a[2]>m) m=a[2]}} END{print m+0}'; }
for t in ${threads//,/ }; do
  v_out="" p_out=""
  for r in $(seq "$rounds"); do
    v_out+="$("$build/bench/bench_train_gpu" --device cpu --precision 32 --mode eager --threads "$t" \
      --batch-size "$batch" --warmup 3 --steps "$steps" | grep '^RESULT')"$'\n'
    if [ $have_torch = 1 ]; then
      p_out+="$("$py" "$root/bench/pytorch_seed_cnn.py" --device cpu --threads "$t" --batch-size "$batch" --warmup 3 --steps "$steps" | grep '^RESULT')"$'\n'
    fi
  done
  v=$(printf '%s' "$v_out" | best img_per_s)
  if [ $have_torch = 1 ]; then
    p=$(printf '%s' "$p_out" | best img_per_s)
    printf 'threads=%s batch=%s  volt %.1f img/s  pytorch %.1f img/s  ratio %.2fx\n' "$t" "$batch" "$v" "$p" "$(awk -v a="$v" -v b="$p" 'BEGIN{print a/b}')"
  else
    printf 'threads=%s batch=%s  volt %.1f img/s  (pytorch not importable with %s: no ratio)\n' "$t" "$batch" "$v" "$py"
  fi
done
