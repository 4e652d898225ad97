#pragma once
// Internal: reading the float module a quantized module is built from.
#include <c10/util/Exception.h>

namespace torchqat::nn::detail {

// The options of a float layer given as a ModuleHolder, refusing an empty holder by name
// instead of with ModuleHolder's generic "Accessing empty ModuleHolder".
template <typename Holder>
const auto& float_options(const Holder& m, const char* layer) {
  TORCH_CHECK_VALUE(!m.is_empty(), layer, ": float_module is an empty module holder");
  return m->options;
}

}  // namespace torchqat::nn::detail
