// Bindings of the model-level rules Python's torchqat.calibrate, torchqat.fold_bn and
// tools.FeatureDistillationLoss share with the C++ flow: the calibration methods and which
// calibrator / search each means, BN folding's arithmetic, and the distillation loss.
#include <pybind11/stl.h>

#include "python/bindings.h"
#include "torchqat/calib/method.h"
#include "torchqat/fold_bn.h"
#include "torchqat/tools/distill.h"

namespace py = pybind11;

namespace torchqat {
namespace python {

void bind_flow(py::module_& m) {
  m.def("calibrate_methods", &calib::calibrate_methods, py::arg("allow_auto") = true);
  m.def("check_calibrate_method", &calib::check_calibrate_method, py::arg("method"), py::arg("what"),
        py::arg("allow_auto") = true);
  m.def("calib_uses_histogram", &calib::uses_histogram, py::arg("method"), py::arg("per_channel"));
  m.def("calib_histogram_search", &calib::histogram_search, py::arg("method"));
  m.def(
      "fold_bn_parameters",
      [](const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& running_mean,
         const at::Tensor& running_var, const std::optional<at::Tensor>& gamma, const std::optional<at::Tensor>& beta,
         double eps, bool transposed, int64_t groups) {
        const auto f = fold_bn_parameters(weight, bias.value_or(at::Tensor()), running_mean, running_var,
                                          gamma.value_or(at::Tensor()), beta.value_or(at::Tensor()), eps, transposed,
                                          groups);
        return py::make_tuple(f.weight, f.bias, f.scale);
      },
      py::arg("weight"), py::arg("bias"), py::arg("running_mean"), py::arg("running_var"), py::arg("gamma"),
      py::arg("beta"), py::arg("eps"), py::arg("transposed") = false, py::arg("groups") = 1);
  m.def("feature_distillation_loss", &tools::feature_distillation_loss, py::arg("layers"), py::arg("student"),
        py::arg("teacher"), py::arg("reduction") = "sum");
}

}  // namespace python
}  // namespace torchqat
