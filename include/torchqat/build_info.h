#pragma once
#include <string>

namespace torchqat {
// Whether this build of libtorchqat holds the CUDA kernels.
bool cuda_compiled();
std::string version();
}  // namespace torchqat
