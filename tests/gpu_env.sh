# Sourced, not run: the library path for Volt binaries built on a machine without a GPU and run on the
# device machine (tests/gpu_carry.sh packs them; bench/run_gpu_bench.sh runs the benchmarks there).
# volt_unpack BUILD_DIR unpacks BUILD_DIR/carry.tar.xz (the carried libraries and executables) unless
# BUILD_DIR/lib exists. volt_gpu_env BUILD_DIR EXE unpacks it too (the binaries find the libraries
# through their RPATH, $ORIGIN/../lib), exports LD_LIBRARY_PATH with only the folders of the
# CUDA libraries there (cuDNN and NCCL from the pip nvidia-* packages of ${PYTHON:-python3} first, then
# the system's; cuBLAS and cudart from the CUDA toolkit first), so the device's own programs (python3,
# ctest, ncu) keep their libraries. Only if EXE does not load is BUILD_DIR/lib added (a pack made
# without the RPATH), then BUILD_DIR/lib/compat (libstdc++/libgcc_s, when the device's are older);
# returns 1 after printing `ldd EXE` if EXE still does not load.
volt_unpack() {
  [ -d "$1/lib" ] || [ ! -f "$1/carry.tar.xz" ] || tar -xJf "$1/carry.tar.xz" -C "$1" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1/carry.tar.xz" "$1"
}  # (python3's lzma where the device has no xz program)
volt_gpu_env() {
  local dir=$1 exe=$2 libdirs="" name found site nvidia="" d
  volt_unpack "$dir" || return 1
  site=$("${PYTHON:-python3}" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null || true)
  for d in $site; do [ -d "$d/nvidia" ] && nvidia="$nvidia $d/nvidia"; done
  for name in libcudnn.so.9 libnccl.so.2 libcublas.so.13 libcudart.so.13; do
    case $name in
      libcudnn*|libnccl*) found=$(volt_find_lib "$name" $nvidia)
        [ -n "$found" ] || found=$(volt_find_lib "$name" /usr/local/cuda*/lib* /usr/lib/x86_64-linux-gnu) ;;
      *) found=$(volt_find_lib "$name" /usr/local/cuda*/lib* /usr/lib/x86_64-linux-gnu)
        [ -n "$found" ] || found=$(volt_find_lib "$name" $nvidia) ;;
    esac
    [ -n "$found" ] || continue
    found=$(dirname "$found")
    case :$libdirs: in *:"$found":*) ;; *) libdirs=${libdirs:+$libdirs:}$found ;; esac
  done
  # (an empty entry in the path would mean the current folder)
  [ -n "$libdirs" ] && export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  volt_loads "$exe" && return 0
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$dir/lib  # a pack without the RPATH
  volt_loads "$exe" && return 0
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$dir/lib/compat  # libstdc++/libgcc_s: the device's are older
  volt_loads "$exe" || { ldd "$exe" >&2; return 1; }
}

# The first file NAME* up to three folders below the given folders (none given: nothing).
volt_find_lib() {
  local name=$1
  shift
  [ $# -gt 0 ] || return 0
  find -H "$@" -maxdepth 3 -name "$name*" 2>/dev/null | head -1  # -H: /usr/local/cuda/lib64 is a link
}

# Whether EXE is an executable file for which the dynamic linker finds every library (and symbol
# version, e.g. GLIBCXX_3.4.32) it needs, if any (a script needs none). (ldd says "No such file", not
# "not found", for a missing EXE: it is checked first.)
volt_loads() {
  local deps  # captured: `ldd | grep -q` fails under pipefail when grep stops reading early
  [ -f "$1" ] && [ -x "$1" ] || { echo "volt_loads: $1 is not an executable file" >&2; return 1; }
  deps="$(ldd "$1" 2>&1 || true)"
  ! grep -q 'not found' <<<"$deps"
}
