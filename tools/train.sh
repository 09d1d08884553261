#!/usr/bin/env bash
# Set up and run the main job (README): installs missing dependencies, builds Volt (Release), and
# trains the seed CNN with cnn_train, passing on any arguments (e.g. --epochs 20).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target cnn_train
exec build/tools/cnn_train "$@"
