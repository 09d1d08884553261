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

# TensorBoard's own reader checks Volt's event files (tests/test_loggers); without it that test is
# reported as skipped, so a failed install only warns.
if ! python3 -c "import tensorboard" 2>/dev/null; then
  echo "install_deps: pip install tensorboard (for the event-file reader test)"
  python3 -m pip install -q tensorboard 2>/dev/null \
    || python3 -m pip install -q --user --break-system-packages tensorboard 2>/dev/null \
    || echo "install_deps: warning: could not install tensorboard; its reader test will be skipped" >&2
fi
