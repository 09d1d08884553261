#!/usr/bin/env bash
# Everything the GPU machine is lent for, in one call that never runs past its budget (the device
# tool allows 600 s per call and 15 minutes of device time per session, machine start included). Build
# here, carry the build, run there. Every step's log lands in a work folder; $OUT gets two files (the
# device tool returns at most 8, at most two folders down), refreshed after every step so that a
# call cut short still returns what ran: summary.txt (a line per step) and logs.tar.gz (every log):
#   here:   mkdir -p .carry && cp -r ../shared/fixtures .carry/     # PyTorch's golden values (git-ignored)
#           bash tests/gpu_carry.sh pack build-gpu                  # then carry ["build-gpu", ".carry"]
#           (pack builds only what travels and counts .carry in the 64 MiB: copy the fixtures first)
#   there:  bash tests/gpu_session.sh [build-gpu] [steps...]        # BUDGET_S=540 by default
# Steps (in this order, the most wanted first; name some to run only those): info checks bench
# ops train-16 shapes allreduce loader kernels igemm train-32 tf32 linear-lt. checks runs gpu-tests (CTest's `gpu` label) and memcheck
# (test_cuda under compute-sanitizer) side by side, as neither is timed; each can be named alone.
# bench is bench/run_gpu_bench.sh (Volt and PyTorch side by side); ops is bench_ops_cuda at batch 128
# and 2048 (per-op times; fused against unfused; the first layer through cuDNN and through Volt's own
# kernel); tf32 is bench_train_gpu in precision 32 with TF32 allowed; linear-lt the step with and
# without cuBLASLt's bias epilogues; train-16 and train-32 time
# `cnn_train --epochs 20` on synthetic data of CIFAR-10's sizes; shapes times one epoch of it five
# ways, to find its fixed cost (see shapes() below); kernels is the per-kernel time of one
# 16-mixed training step (ncu); igemm is ncu's detailed sections (occupancy, stall reasons, memory
# and pipe use) for the first layer's own kernels at batch 2048. Under gVisor, where
# compute-sanitizer and ncu cannot use the GPU, memcheck, kernels and igemm say so instead of running.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-gpu}
[ $# -gt 0 ] && shift
case $build in /*) dir=$build ;; *) dir=$root/$build ;; esac
out=${OUT:-$root/gpu-out}
work=${WORK:-$(mktemp -d /tmp/volt-gpu-session.XXXXXX)}
mkdir -p "$out" "$work"
budget=${BUDGET_S:-540}
start=$SECONDS
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(info checks bench ops train-16 shapes allreduce loader kernels igemm train-32 tf32 linear-lt)
gvisor=0
case $(uname -r) in 4.4.0*) gvisor=1 ;; esac  # gVisor's kernel version

# What comes back: the summary, and every log but checkpoints in one archive.
# (Written aside and then renamed: a call killed while tar runs keeps the previous whole archive.)
save() {
  cp "$work/summary.txt" "$out/summary.tmp" 2>/dev/null && mv -f "$out/summary.tmp" "$out/summary.txt"
  tar -czf "$out/logs.tmp.tar.gz" --exclude='*.ckpt' -C "$work" . 2>/dev/null &&
    mv -f "$out/logs.tmp.tar.gz" "$out/logs.tar.gz"
}

. "$root/tests/gpu_env.sh"
had_ld=${LD_LIBRARY_PATH+1} orig_ld=${LD_LIBRARY_PATH-}
if ! volt_gpu_env "$dir" "$dir/tests/test_cuda" >"$work/env.log" 2>&1; then
  echo "the binaries in $dir do not load here (see env.log)" | tee "$work/summary.txt"
  save
  exit 1
fi
export VOLT_REQUIRE_GPU=1  # a GPU test that finds no GPU fails here instead of reporting "skipped"
if [ -d "$root/.carry/fixtures" ]; then
  export VOLT_FIXTURES_DIR=$root/.carry/fixtures
else
  echo "golden: .carry/fixtures was not carried, so test_golden_gpu reports skipped" | tee -a "$work/summary.txt"
fi

# run NAME CAP CMD...: CMD with a time limit of CAP seconds or what is left of the budget; its line in
# the summary, and what came back refreshed (SAVE=0: not, for runs side by side).
run() {
  local name=$1 cap=$2 left t0 rc
  shift 2
  left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 10 ]; then
    echo "$name: not run (budget of ${budget} s used)" | tee -a "$work/summary.txt"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  t0=$SECONDS
  timeout --kill-after=5 "$cap" bash -c '"$@"' bash "$@" >"$work/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s (limit $cap s)$([ $rc -eq 124 ] && echo ' TIMED OUT')" |
    tee -a "$work/summary.txt"
  [ "${SAVE:-1}" = 0 ] || save
}

# Under gVisor a step that needs the GPU's profiling interfaces is reported, not run.
needs_tools() {
  [ $gvisor = 0 ] && return 0
  echo "$1: not run (gVisor: compute-sanitizer and ncu cannot use the GPU here)" | tee -a "$work/summary.txt"
  return 1
}
gpu_tests() { run gpu-tests "$1" bash "$root/tests/gpu_carry.sh" ctest "$build" -L gpu --output-on-failure -j 4; }
memcheck() {
  needs_tools memcheck || return 0
  # Both programs whatever the first's outcome (a failing doctest case is not a memory error); the
  # status is the first non-zero one.
  run memcheck "$1" bash -c 'rc=0; for t in test_cuda test_cuda_training; do
    compute-sanitizer --tool memcheck --error-exitcode 3 "$0/tests/$t" --duration=true; r=$?
    echo "memcheck $t: exit $r"; [ $rc = 0 ] && rc=$r; done; exit $rc' "$dir"
}

# The time of the whole cnn_train job, start to printed test metrics.
timed_train() {
  local t0=$SECONDS
  VOLT_CUDNN_VERBOSE=1 "$dir/tools/cnn_train" --dataset synthetic --epochs 20 --no-progress --log-dir "$work/runs" "$@"
  local rc=$?
  echo "WALL cnn_train --dataset synthetic --epochs 20 $*: $((SECONDS - t0)) s (exit $rc)"
  return $rc
}

# Where cnn_train's fixed cost goes in 16-mixed. On the H200 each new batch shape (an epoch's last
# batch of 72, validation's 8, the test's 16) cost about 1 s there and nothing in 32 (cuDNN choosing
# backward algorithms for the 16-bit shapes of 8 and 16, since chosen only where used, 22f96b4): one
# epoch as is, with whole batches only, with cuDNN alone for the first layer, with every CUDA module
# loaded at the start, and in 32; and before them bench_ops_cuda --first-calls, op by op.
shapes() {
  local v t0
  # Each op's first call at each new batch shape, by type, against its second.
  "$dir/bench/bench_ops_cuda" --first-calls >"$work/first-calls.log" 2>&1
  echo "SHAPES first calls: exit $?; slowest: $(grep RESULT "$work/first-calls.log" | sort -t= -k5 -g -r |
    head -3 | sed -E 's/ +/ /g' | tr '\n' ';')"
  for v in plain whole-batches conv-own-0 eager-loading precision-32; do
    local args=(--dataset synthetic --epochs 1 --no-progress --log-dir "$work/runs-shapes") env=()
    case $v in
      plain) env=(VOLT_CUDNN_VERBOSE=1) ;;  # each convolution direction's choice and what choosing it took
      whole-batches) args+=(--train-samples 44928 --val-samples 4992 --test-samples 9984) ;;  # 351, 39, 78 x 128
      conv-own-0) env=(VOLT_CONV_OWN=0) ;;
      eager-loading) env=(CUDA_MODULE_LOADING=EAGER) ;;
    esac
    [ $v = precision-32 ] && args+=(--precision 32) || args+=(--precision 16-mixed)
    t0=$EPOCHREALTIME
    env "${env[@]}" "$dir/tools/cnn_train" "${args[@]}" >"$work/shapes-$v.log" 2>&1
    echo "SHAPES $v: exit $? in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s;" \
      "$(grep -oE 'fit [0-9.]+ s, total [0-9.]+ s' "$work/shapes-$v.log")"
    if [ $v = plain ]; then
      echo "SHAPES plain: cuDNN's choices took $(grep -oE 'chosen in [0-9.]+ ms' "$work/shapes-$v.log" |
        awk '{n++; s+=$3} END{printf "%.1f ms over %d directions", s, n}')"
    fi
  done
}

# One 16-mixed training step at batch 128 and 2048 under ncu: every kernel's GPU time.
kernels() {
  local b
  for b in 128 2048; do
    echo "== batch $b"
    # eager mode: one kernel per launch. A step is 46 launches on the emulated backend (a library call
    # may be a few kernels here): 9 steps, of which the first 250 kernels (past the 3 warm-up steps
    # for up to 83 kernels a step) are skipped, then 150 timed (2 steps or more).
    # (--clock-control none: the clocks the benchmarks run at, not ncu's locked base clock)
    ncu --csv --clock-control none --metrics gpu__time_duration.sum --launch-skip 250 --launch-count 150 \
      "$dir/bench/bench_train_gpu" --batch-size "$b" --precision 16-mixed --mode eager --warmup 3 --steps 6
  done
}

# The first layer's own kernels (conv_igemm.cu: 56% and 12% of a 16-mixed step at batch 2048 on the
# H200) under ncu's detailed sections: one forward and one weight-gradient launch after the warm-up.
igemm() {
  ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --section ComputeWorkloadAnalysis -k 'regex:conv_igemm_(forward|wgrad)_kernel' --launch-skip 6 --launch-count 2 \
    "$dir/bench/bench_train_gpu" --batch-size 2048 --precision 16-mixed --mode eager --warmup 3 --steps 3
}

# Per-op times at the seed CNN's shapes, batch 128 and 2048.
ops() {
  local b
  for b in 128 2048; do "$dir/bench/bench_ops_cuda" --batch "$b" --iters 20 || return; done
}

# The whole step at batch 128 with the linear layers' bias in cuBLASLt's epilogues (the default) and
# without (VOLT_LINEAR_LT=0: cublasGemmEx and separate bias kernels), graph_nodes= included.
linear_lt() {
  local lt
  for lt in 1 0; do
    echo "== VOLT_LINEAR_LT=$lt"
    VOLT_LINEAR_LT=$lt "$dir/bench/bench_train_gpu" --batch-size 128 --precision 32,16-mixed --mode graph || return
  done
}

# CMD... with the library path the session started with: PyTorch's side of the bench loads its own
# libraries (run_gpu_bench.sh sets Volt's path for Volt's calls alone).
device_env() {
  if [ -n "$had_ld" ]; then LD_LIBRARY_PATH=$orig_ld "$@"; else env -u LD_LIBRARY_PATH "$@"; fi
}

export dir work had_ld orig_ld
export -f timed_train shapes kernels igemm ops linear_lt device_env
for s in "${steps[@]}"; do
  case $s in
    info) run info 20 bash -c "nvidia-smi; nvcc --version; ldd --version | head -1; head -3 /etc/os-release;
                             echo LD_LIBRARY_PATH=\$LD_LIBRARY_PATH" ;;
    checks)  # (memcheck's cap is below the tests': it does not hold the step up)
      SAVE=0 gpu_tests 210 &
      SAVE=0 memcheck 150 &
      wait
      save ;;
    gpu-tests) gpu_tests 210 ;;
    memcheck) memcheck 150 ;;
    # (16-mixed first: its ratio to PyTorch's best is the target; Volt's configurations run in one
    # process, PyTorch gets --budget 120 s of the 210)
    bench) VOLT_TIMEOUT=40 run bench 220 device_env bash "$root/bench/run_gpu_bench.sh" --build "$dir" --out "$work/bench" \
             --precisions 16-mixed,32 --time-limit 210 --budget 120 ;;
    ops) run ops 40 ops ;;
    tf32) run tf32 40 "$dir/bench/bench_train_gpu" --precision 32 --float32-matmul-precision high --mode graph ;;
    linear-lt) run linear-lt 40 linear_lt ;;
    train-16) run train-16 45 timed_train --precision 16-mixed ;;
    train-32) run train-32 45 timed_train --precision 32 ;;
    shapes) run shapes 60 shapes ;;
    allreduce) run allreduce 25 "$dir/bench/bench_allreduce" --no-host ;;
    loader) run loader 25 "$dir/bench/bench_loader" ;;
    kernels) needs_tools kernels && run kernels 45 kernels ;;
    igemm) needs_tools igemm && run igemm 60 igemm ;;
    *) echo "unknown step '$s' (info checks gpu-tests memcheck bench ops train-16 shapes allreduce loader kernels" \
         "igemm train-32 tf32 linear-lt)" >&2
       exit 2 ;;
  esac
done
echo "total: $((SECONDS - start)) s of a ${budget} s budget" | tee -a "$work/summary.txt"
save
# 1 when a step failed or timed out (its summary line says which), else 0.
! grep -qE '^[a-z0-9-]+: exit [1-9]' "$work/summary.txt"
