# Sourced, not run: the library path for Volt binaries built on a machine without a GPU and run on the
# device machine (tests/gpu_carry.sh packs them; bench/run_gpu_bench.sh runs the benchmarks there).
# volt_gpu_env BUILD_DIR EXE unpacks BUILD_DIR/lib.tar.xz unless BUILD_DIR/lib exists, exports
# LD_LIBRARY_PATH with BUILD_DIR/lib and the folders of the CUDA libraries there (system CUDA, or the pip
# nvidia-* packages of ${PYTHON:-python3}), adds BUILD_DIR/lib/compat only if EXE does not load without it,
# and returns 1 after printing `ldd EXE` if EXE still does not load.
volt_gpu_env() {
  local dir=$1 exe=$2 libdirs name found site
  [ -d "$dir/lib" ] || [ ! -f "$dir/lib.tar.xz" ] || tar -xJf "$dir/lib.tar.xz" -C "$dir" || return 1
  libdirs=$dir/lib
  site=$("${PYTHON:-python3}" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null || true)
  # NCCL (218 MB) does not travel either: PyTorch's pip nvidia-nccl-cu13 there provides libnccl.so.2.
  for name in libcudnn.so.9 libcublas.so.13 libcudart.so.13 libnccl.so.2; do
    found=$(find /usr/local/cuda*/lib* /usr/lib/x86_64-linux-gnu $site -name "$name*" 2>/dev/null | head -1 || true)
    [ -n "$found" ] || continue
    found=$(dirname "$found")
    case :$libdirs: in *:"$found":*) ;; *) libdirs=$libdirs:$found ;; esac
  done
  # (an empty entry in the path would mean the current folder)
  export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  volt_loads "$exe" && return 0
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$dir/lib/compat  # libstdc++/libgcc_s: the device's are older
  volt_loads "$exe" || { ldd "$exe" >&2; return 1; }
}

# Whether the dynamic linker finds every library (and symbol version, e.g. GLIBCXX_3.4.32) EXE needs.
volt_loads() {
  ! ldd "$1" 2>&1 | grep -q 'not found'
}
