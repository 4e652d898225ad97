#include "torchqat/build_info.h"

#include <torch/headeronly/version.h>

#define TORCHQAT_STR2(x) #x
#define TORCHQAT_STR(x) TORCHQAT_STR2(x)

namespace torchqat {
bool cuda_compiled() {
#ifdef TORCHQAT_WITH_CUDA
  return true;
#else
  return false;
#endif
}
std::string version() { return TORCHQAT_VERSION; }
std::string torch_version() {
  return TORCHQAT_STR(TORCH_VERSION_MAJOR) "." TORCHQAT_STR(TORCH_VERSION_MINOR) "." TORCHQAT_STR(TORCH_VERSION_PATCH);
}
std::string cuda_archs() {
#if defined(TORCHQAT_WITH_CUDA) && defined(TORCHQAT_CUDA_ARCHS)
  return TORCHQAT_CUDA_ARCHS;
#else
  return "";
#endif
}
}  // namespace torchqat
