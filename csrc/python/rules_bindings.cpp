// Bindings of the quantization rules (include/torchqat/quant_rules.h), so Python's quantizers and
// exporter use the C++ definitions instead of their own copies.
#include <pybind11/stl.h>

#include "python/bindings.h"
#include "torchqat/onnx/export.h"
#include "torchqat/quant_rules.h"

namespace py = pybind11;

namespace torchqat {
namespace python {

void bind_rules(py::module_& m) {
  m.attr("MIN_NUM_BITS") = kMinNumBits;
  m.attr("MAX_NUM_BITS") = kMaxNumBits;
  m.attr("ZERO_AMAX_SCALE") = static_cast<double>(onnx::kZeroAmaxScale);
  m.def(
      "check_num_bits", [](const std::string& what, int64_t num_bits) { check_num_bits(what.c_str(), num_bits); },
      py::arg("what"), py::arg("num_bits"), "ValueError '<what>: num_bits must be in [2, 16], got <n>' outside it");
  m.def("quant_bound", &quant_bound, py::arg("num_bits"), py::arg("unsigned"),
        "The largest grid value: 2^(b-1)-1 signed, 2^b-1 unsigned");
  m.def("quant_min", &quant_min, py::arg("num_bits"), py::arg("unsigned"), py::arg("narrow_range"),
        "The smallest grid value: 0 unsigned, -bound narrow, else -bound-1");
  m.def(
      "check_amax", [](const std::string& what, const at::Tensor& amax) { check_amax(what.c_str(), amax); },
      py::arg("what"), py::arg("amax"), "ValueError unless every amax is finite and >= 0");
  m.def(
      "amax_axes",
      [](const std::vector<int64_t>& sizes) {
        return amax_axes(c10::fromIntArrayRefSlow(c10::IntArrayRef(sizes)));
      },
      py::arg("sizes"), "The dims of a broadcast-shaped amax that are not 1");
  m.def("qdq_scale", &qdq_scale, py::arg("amax"), py::arg("bound"), py::arg("zero_scale"),
        "amax / bound in float32 on the CPU, a scale below the smallest normal float32 replaced by zero_scale");
  m.def(
      "lsq_sample_count",
      [](const std::vector<int64_t>& x_sizes, int64_t amax_numel, bool amax_along_dim0) {
        return lsq_sample_count(x_sizes, amax_numel, amax_along_dim0);
      },
      py::arg("x_sizes"), py::arg("amax_numel"), py::arg("amax_along_dim0"),
      "LSQ's N_F: the elements one amax entry covers in one sample");
}

}  // namespace python
}  // namespace torchqat
