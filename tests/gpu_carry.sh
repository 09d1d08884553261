#!/usr/bin/env bash
# Builds the GPU tests on a machine without a GPU and runs them on the device machine (see the
# device tool's README): that machine has the CUDA driver, nvcc and PyTorch's pip cuDNN/cuBLAS/NCCL, but
# not OpenBLAS, so the host libraries the binaries need travel in <build>/lib.
#   here:   bash tests/gpu_carry.sh pack  [build-gpu]                 # then carry "build-gpu"
#   there:  bash tests/gpu_carry.sh run   [build-gpu] [doctest args]  # e.g. -tc='gpu conv2d*'
#           bash tests/gpu_carry.sh ctest [build-gpu] [ctest args]    # e.g. -L gpu --output-on-failure
#           WRAP="compute-sanitizer --tool memcheck" bash tests/gpu_carry.sh run build-gpu -tc='gpu relu*' 
set -euo pipefail
mode=${1:?usage: gpu_carry.sh pack|run|ctest [build-dir] [args...]}
build=${2:-build-gpu}
shift $(( $# >= 2 ? 2 : 1 ))
root=$(cd "$(dirname "$0")/.." && pwd)
case $build in /*) dir=$build ;; *) dir=$root/$build ;; esac
# Every `gpu`-labelled test program, and what tests/gpu_session.sh runs.
targets="test_cuda test_cuda_training test_cuda_graph test_golden_gpu test_trainer_gpu test_loader_gpu test_nccl
  test_ddp_gpu cnn_train bench_ops_cuda bench_train_gpu bench_allreduce bench_loader"

case $mode in
pack)
  # The binaries find the carried libraries through their own RPATH ($ORIGIN/../lib, or ../../lib from
  # tests/dist; DT_RPATH, not RUNPATH, so that it also serves the libraries' own dependencies): the
  # device's other programs (python3 and PyTorch, ctest, ncu) never load them.
  # Each gpu test at most 150 s there (VOLT_GPU_TEST_TIMEOUT): one that hangs costs that, not the session.
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DVOLT_CUDA=ON \
    '-DCMAKE_BUILD_RPATH=$ORIGIN/../lib;$ORIGIN/../../lib' -DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags \
    -DVOLT_GPU_TEST_TIMEOUT=150 >/dev/null
  cmake --build "$dir" -j"$(nproc)" --target $targets
  rm -rf "$dir/lib" "$dir/lib.tar.xz" "$dir/carry.tar.xz"  # a run here unpacked it: start again
  mkdir -p "$dir/lib/compat"
  for t in $targets; do
    exe=$(find "$dir/tests" "$dir/bench" "$dir/tools" -name "$t" -type f -perm -u+x | head -1)
    [ -n "$exe" ] || { echo "gpu_carry: $t was not built" >&2; exit 1; }
    ldd "$exe" | awk '/=> \//{print $3}'
  done | sort -u | while read -r lib; do
    case $(basename "$lib") in
      # the driver's and CUDA's (the device has them), and glibc's, which must match the device's libc
      libcuda.so*|libcudart*|libcublas*|libcudnn*|libnccl*|libc.so*|libm.so*|ld-linux*|libdl.so*|libpthread.so*|librt.so*) ;;
      libresolv.so*|libnss_*|libanl.so*|libmvec.so*|libutil.so*|libthread_db*) ;;
      libstdc++*|libgcc_s*) cp -L "$lib" "$dir/lib/compat/" ;;  # used only if the device's are older
      *) cp -L "$lib" "$dir/lib/" ;;
    esac
  done
  # What runs there is the executables and CTest's files: drop objects, the static libraries and
  # CMake's own files, strip the symbols, and compress the libraries and the executables into
  # carry.tar.xz, which volt_gpu_env (tests/gpu_env.sh) unpacks there (OpenBLAS alone is 36 MB, and
  # each executable carries Volt's device code; the tree that travels must stay under 64 MiB).
  find "$dir" -name '*.o' -delete
  find "$dir" -name '*.a' -delete
  find "$dir" -type d -name CMakeFiles -prune -exec rm -rf {} +
  for t in $targets; do
    find "$dir/tests" "$dir/bench" "$dir/tools" -name "$t" -type f -perm -u+x -exec strip --strip-unneeded {} +
  done
  # Other programs a full build left (each holds Volt's device code, uncompressed) do not travel.
  find "$dir/tests" "$dir/bench" "$dir/tools" -type f -perm -u+x | while read -r f; do
    case " $(echo $targets) " in *" $(basename "$f") "*) continue ;; esac
    [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] && rm -f "$f"
  done
  bins=$(cd "$dir" && for t in $targets; do find tests bench tools -name "$t" -type f -perm -u+x; done)
  # shellcheck disable=SC2086  # one path per word (no spaces in the build's own paths)
  tar -cJf "$dir/carry.tar.xz" -C "$dir" lib $bins && rm -rf "$dir/lib" && (cd "$dir" && rm -f $bins)
  # The commit the binaries were built from, for bench/RESULTS.md rows (the device's copy has no git).
  git -C "$root" describe --always --dirty --abbrev=7 >"$dir/volt_commit" 2>/dev/null || rm -f "$dir/volt_commit"
  # What travels: this folder, .carry (the fixtures) and the tracked sources; the cap is 64 MiB.
  # (.carry may not exist yet: du would exit 1 and, under pipefail, end the script without a word)
  carried=("$dir"); [ -e "$root/.carry" ] && carried+=("$root/.carry")
  bytes=$(du -scb "${carried[@]}" | tail -1 | cut -f1)
  bytes=$((bytes + $(git -C "$root" ls-files -z | (cd "$root" && du -cb --files0-from=- 2>/dev/null) | tail -1 | cut -f1)))
  echo "gpu_carry: $dir is $(du -sh "$dir" | cut -f1); with .carry and the sources $((bytes / 1048576)) MiB travel"
  [ "$bytes" -le $((62 * 1048576)) ] || { echo "gpu_carry: over 62 MiB: the device tool refuses more than 64" >&2; exit 1; }
  ;;
run|ctest)
  . "$root/tests/gpu_env.sh"
  volt_gpu_env "$dir" "$dir/tests/test_cuda" || exit 1
  export VOLT_REQUIRE_GPU=1  # there, a GPU test that finds no GPU fails instead of reporting "skipped"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  nvidia-smi -L || true
  if [ "$mode" = run ]; then
    # WRAP runs it under a tool, e.g. WRAP="compute-sanitizer --tool memcheck"
    cd "$dir/tests" && exec ${WRAP:-} ./test_cuda "$@"
  fi
  # CTest's files name the build folder by its absolute path here; make that path exist there too.
  here=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$dir/CMakeCache.txt")
  if [ "$here" != "$root" ] && [ ! -e "$here" ]; then mkdir -p "$(dirname "$here")" && ln -s "$root" "$here"; fi
  # Scripted tests run `cmake -P` by the path it had here (/usr/bin/cmake); there CMake may be pip's.
  cmake_here=$(sed -n 's/^CMAKE_COMMAND:INTERNAL=//p' "$dir/CMakeCache.txt")
  if [ -n "$cmake_here" ] && [ ! -e "$cmake_here" ] && command -v cmake >/dev/null; then
    mkdir -p "$(dirname "$cmake_here")" 2>/dev/null && ln -s "$(command -v cmake)" "$cmake_here" 2>/dev/null ||
      echo "gpu_carry: no $cmake_here here and it cannot be linked: the cmake -P tests will fail" >&2
  fi
  case $build in /*) exec ctest --test-dir "$dir" "$@" ;; esac
  cd "$here/$build" && exec ctest "$@"
  ;;
*) echo "usage: gpu_carry.sh pack|run|ctest [build-dir] [args...]" >&2; exit 2 ;;
esac
