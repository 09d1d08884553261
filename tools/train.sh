#!/usr/bin/env bash
# Set up and run the main job (README): installs missing dependencies, builds Volt (Release) in the
# repository's build/, and trains the seed CNN with cnn_train, passing on any arguments (e.g.
# --epochs 20). cnn_train runs in the folder this was started from, so relative --data-dir, --log-dir
# and --save paths mean what they say there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/tools/install_deps.sh"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$root/build" -j "$(nproc 2>/dev/null || echo 2)" --target cnn_train
exec "$root/build/tools/cnn_train" "$@"
