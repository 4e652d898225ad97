#include "torchqat/build_info.h"

namespace torchqat {
bool cuda_compiled() {
#ifdef TORCHQAT_WITH_CUDA
  return true;
#else
  return false;
#endif
}
std::string version() { return TORCHQAT_VERSION; }
}  // namespace torchqat
