#!/usr/bin/env bash
# ctest example_cpp_fashion_qat: installs the build into a scratch prefix, builds this example
# against it as a user's project would, and runs it briefly (a few hundred training images).
# Exits 77 (skipped) when the Fashion-MNIST files are not installed.
set -euo pipefail
build_dir=$1; src_dir=$2
data_dir=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data_dir/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST not found in $data_dir (apt-get install dataset-fashion-mnist); skipping"
  exit 77
fi
prefix="$build_dir/install-example"
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
torch_prefix=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
cmake -S "$src_dir" -B "$build_dir/example-cpp" -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" >/dev/null
cmake --build "$build_dir/example-cpp" -j 2 >/dev/null
out="$build_dir/example-cpp/out"
rm -rf "$out"
"$build_dir/example-cpp/fashion_qat" --data-dir "$data_dir" --out "$out" --epochs 1 --qat-epochs 1 \
  --max-train-batches 5 --batch-size 64 --calib-batches 2 --max-test-batches 2
test -s "$out/fashion_qat.onnx"
test -s "$out/fashion_qat.pt"
echo "ok: $out/fashion_qat.onnx"
