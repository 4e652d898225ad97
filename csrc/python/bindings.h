#pragma once
#include <torch/extension.h>

namespace torchqat {
namespace python {
void bind_calibrators(pybind11::module_& m);
void bind_flow(pybind11::module_& m);
void bind_rules(pybind11::module_& m);
}  // namespace python
}  // namespace torchqat
