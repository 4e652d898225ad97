#pragma once
#include <string>

namespace torchqat {
// Whether this build of libtorchqat holds the CUDA kernels.
bool cuda_compiled();
// torchqat's version, e.g. "0.1.0".
std::string version();
// The LibTorch version libtorchqat was compiled against ("2.11.0"); its C++ ABI must match at run time.
std::string torch_version();
// The CUDA architectures the kernels were compiled for (TORCH_CUDA_ARCH_LIST form, e.g. "8.0;9.0+PTX");
// empty when cuda_compiled() is false.
std::string cuda_archs();
}  // namespace torchqat
