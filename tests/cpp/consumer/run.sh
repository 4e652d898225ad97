#!/usr/bin/env bash
# Installs the build into a scratch prefix, then configures, builds and runs the consumer
# against it the way a user's project would.
set -euo pipefail
build_dir=$1; src_dir=$2
prefix="$build_dir/install-test"
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
torch_prefix=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
cmake -S "$src_dir" -B "$build_dir/consumer" -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" >/dev/null
cmake --build "$build_dir/consumer" -j 2 >/dev/null
"$build_dir/consumer/consumer"
