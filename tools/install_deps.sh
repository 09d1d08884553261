#!/usr/bin/env bash
# Installs what Volt builds and tests with on Debian/Ubuntu, skipping what is already there:
# a C++17 compiler, CMake >= 3.25, OpenBLAS, doctest, zlib, stb, libcurl, libarchive, python3 (its
# http.server serves the download tests on 127.0.0.1), OpenMPI (multi-process training on the CPU
# and the mpirun tests) and TensorBoard (its reader checks the event files). The CUDA toolkit is
# optional and not installed here.
set -euo pipefail
need=()
for pkg in g++ make cmake libopenblas-dev doctest-dev zlib1g-dev libstb-dev libcurl4-openssl-dev libarchive-dev python3 python3-pip openmpi-bin libopenmpi-dev; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install_deps: installing ${need[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_deps: need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; }
    sudo_cmd="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Ubuntu 22.04's apt CMake is 3.22: take PyPI's (installed to /usr/local/bin, ahead of /usr/bin).
cmake_version="$(cmake --version 2>/dev/null | head -n 1 | awk '{print $3}')"
if [ "$(printf '%s\n' 3.25 "${cmake_version:-0}" | sort -V | head -n 1)" != "3.25" ]; then
  echo "install_deps: CMake ${cmake_version:-(none)} is older than 3.25: pip install cmake"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd python3 -m pip install -q "cmake>=3.25" || $sudo_cmd python3 -m pip install -q --break-system-packages "cmake>=3.25"
  hash -r
  cmake --version | head -n 1
fi

# TensorBoard's own reader checks Volt's event files (tests/test_loggers); without it that test is
# reported as skipped, so a failed install only warns.
if ! python3 -c "import tensorboard" 2>/dev/null; then
  echo "install_deps: pip install tensorboard (for the event-file reader test)"
  python3 -m pip install -q tensorboard 2>/dev/null \
    || python3 -m pip install -q --user --break-system-packages tensorboard 2>/dev/null \
    || echo "install_deps: warning: could not install tensorboard; its reader test will be skipped" >&2
fi
