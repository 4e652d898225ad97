#include "python/bindings.h"

namespace torchqat {
namespace python {
// Filled by the calibration capability.
void bind_calibrators(pybind11::module_& m) {}
}  // namespace python
}  // namespace torchqat
