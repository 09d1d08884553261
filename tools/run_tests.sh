#!/usr/bin/env bash
# The test command (README): installs missing dependencies, configures, builds and runs the whole
# suite through CTest. Options:
#   --sanitize   a second, CPU-only (-DVOLT_CUDA=OFF) Debug build (-O1 -g1) with AddressSanitizer and
#                UndefinedBehaviorSanitizer, in build-asan/ (tests labelled "slow" are left out)
#   --emulated   a build whose CUDA backend runs on the host (-DVOLT_CUDA=EMULATED: the emulated CUDA
#                runtime, cuBLAS and cuDNN of kernels/cuda/emu/), in build-emu/, running the tests
#                labelled "gpu" and "emu" (the others are the plain build's); it proves the backend's
#                logic without a GPU, not its speed or its behaviour on real hardware; its kernels'
#                threads and blocks run in a shuffled order (VOLT_EMU_SCHEDULE, default shuffle:1)
#   extra arguments after -- go to cmake's configure step
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

build=build
cfg=(-DCMAKE_BUILD_TYPE=Release)
ctest_args=()
if [ "${1:-}" = "--sanitize" ]; then
  shift
  build=build-asan
  # -O1 (asserts on): the instrumented code runs the suite in half the time of -O0 (298 s against
  # 601 s of CTest on the 2-core CI machine) and keeps the sanitizers' findings (AddressSanitizer's
  # own advice for usable speed). -g1: line tables, all the sanitizers' reports need (file:line in
  # every frame); libvolt.a is 78 MB instead of 163 MB with -g, and the build took 406 s, not 502 s.
  cfg=(-DCMAKE_BUILD_TYPE=Debug -DVOLT_CUDA=OFF -DVOLT_SANITIZE=address,undefined -DVOLT_BUILD_BENCH=OFF
       "-DCMAKE_C_FLAGS_DEBUG=-g1 -O1" "-DCMAKE_CXX_FLAGS_DEBUG=-g1 -O1")
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest_args=(-LE slow)  # the one-epoch MNIST run (30-120 s in the Release stage) runs there only
elif [ "${1:-}" = "--emulated" ]; then
  shift
  build=build-emu
  cfg=(-DCMAKE_BUILD_TYPE=Release -DVOLT_CUDA=EMULATED -DVOLT_BUILD_BENCH=OFF)
  ctest_args=(-L "gpu|emu")
  # Threads and blocks in a shuffled order (kernels/cuda/emu/emu_runtime.cpp): the plain build already
  # runs the kernels in thread order, so this run covers the orders a GPU may pick instead.
  export VOLT_EMU_SCHEDULE=${VOLT_EMU_SCHEDULE:-shuffle:1}
fi
if [ $# -gt 0 ]; then
  if [ "$1" != "--" ]; then
    echo "run_tests.sh: unknown option '$1' (options: --sanitize or --emulated, then -- and cmake arguments)" >&2
    exit 2
  fi
  shift
fi
bash tools/install_deps.sh

jobs="$(nproc 2>/dev/null || echo 2)"
# CTest runs $jobs tests at once and each uses $jobs OpenMP threads: threads that spin while they wait
# (libgomp's default) take the cores from the other test's. Sleeping waits cut the Release stage's
# CTest from 162 s to 120 s (user time 225 s to 120 s) on the 2-core CI machine; a one-epoch MNIST
# run on its own took the same time either way (28-29 s).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cmake -S . -B "$build" "${cfg[@]}" "$@"
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j "$jobs" "${ctest_args[@]}"
