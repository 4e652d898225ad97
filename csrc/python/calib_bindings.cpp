// Bindings of the C++ calibrators and amax searches; the Python classes in torchqat.calib wrap
// these (argument names and defaults as pytorch-quantization's) and add torch.distributed merging.
#include <pybind11/stl.h>

#include "python/bindings.h"
#include "torchqat/calib/amax_search.h"
#include "torchqat/calib/distributed.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/max_calibrator.h"
#include "torchqat/calib/numpy_histogram.h"

namespace py = pybind11;

namespace torchqat {
namespace python {

namespace {
std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  if (!t.defined()) return std::nullopt;
  return t;
}
}  // namespace

void bind_calibrators(py::module_& m) {
  using calib::AmaxOptions;
  using calib::HistogramCalibrator;
  using calib::MaxCalibrator;

  py::class_<MaxCalibrator, std::shared_ptr<MaxCalibrator>>(m, "MaxCalibrator")
      .def(py::init<int64_t, std::vector<int64_t>, bool, bool>(), py::arg("num_bits") = 8,
           py::arg("axis") = std::vector<int64_t>{}, py::arg("unsigned") = false, py::arg("track_amax") = false)
      .def("collect", &MaxCalibrator::collect, py::arg("x"), py::call_guard<py::gil_scoped_release>())
      .def("reset", &MaxCalibrator::reset)
      .def("compute_amax", [](MaxCalibrator& c) { return c.compute_amax(); })
      .def("calib_amax", [](const MaxCalibrator& c) { return defined_or_none(c.calib_amax()); })
      .def("set_calib_amax", &MaxCalibrator::set_calib_amax, py::arg("amax"))
      .def("amaxs", &MaxCalibrator::amaxs)
      .def("name", &MaxCalibrator::name);

  py::class_<HistogramCalibrator, std::shared_ptr<HistogramCalibrator>>(m, "HistogramCalibrator")
      .def(py::init([](int64_t num_bits, std::optional<std::vector<int64_t>> axis, bool is_unsigned, int64_t num_bins,
                       bool skip_zeros, bool e4m3) {
             return std::make_shared<HistogramCalibrator>(num_bits, std::move(axis), is_unsigned, num_bins, skip_zeros,
                                                          e4m3 ? QuantFormat::kE4M3 : QuantFormat::kInt);
           }),
           py::arg("num_bits") = 8, py::arg("axis") = py::none(), py::arg("unsigned") = false,
           py::arg("num_bins") = 2048, py::arg("skip_zeros") = false, py::arg("e4m3") = false)
      .def("collect", &HistogramCalibrator::collect, py::arg("x"), py::call_guard<py::gil_scoped_release>())
      .def("reset", &HistogramCalibrator::reset)
      .def(
          "compute_amax",
          [](HistogramCalibrator& c, std::string method, int64_t start_bin, int64_t stride, double percentile) {
            AmaxOptions o;
            o.method = std::move(method);
            o.start_bin = start_bin;
            o.stride = stride;
            o.percentile = percentile;
            py::gil_scoped_release no_gil;
            return c.compute_amax(o);
          },
          py::arg("method"), py::arg("start_bin") = 128, py::arg("stride") = 1, py::arg("percentile") = 99.99)
      .def("histogram", [](const HistogramCalibrator& c) { return defined_or_none(c.histogram()); })
      .def("bin_width", &HistogramCalibrator::bin_width)
      .def("set_state", &HistogramCalibrator::set_state, py::arg("hist"), py::arg("bin_width"))
      .def("reserve_range", &HistogramCalibrator::reserve_range, py::arg("vmax"))
      .def("grow_to", &HistogramCalibrator::grow_to, py::arg("num_bins"))
      .def("pending_zeros", &HistogramCalibrator::pending_zeros)
      .def("name", &HistogramCalibrator::name);

  // The searches on a plain histogram (counts as a list/array of ints), for tools and tests.
  m.def("amax_entropy", &calib::amax_entropy, py::arg("counts"), py::arg("width"), py::arg("num_bits") = 8,
        py::arg("unsigned") = false, py::arg("start_bin") = 128, py::arg("stride") = 1,
        py::call_guard<py::gil_scoped_release>());
  m.def("amax_percentile", &calib::amax_percentile, py::arg("counts"), py::arg("width"), py::arg("percentile"),
        py::call_guard<py::gil_scoped_release>());
  // HistogramCalibrator.sync's re-binning of a rank's counts onto the widest width.
  m.def("rebin_counts", &calib::rebin_counts, py::arg("counts"), py::arg("width"), py::arg("new_width"));
  // pytorch-quantization's numpy histogram path (HistogramCalibrator(torch_hist=False)).
  m.def(
      "numpy_histogram_collect",
      [](const at::Tensor& x, std::optional<at::Tensor> hist, std::optional<at::Tensor> edges, int64_t num_bins,
         bool skip_zeros) {
        return calib::numpy_histogram_collect(x, hist.value_or(at::Tensor()), edges.value_or(at::Tensor()), num_bins,
                                              skip_zeros);
      },
      py::arg("x"), py::arg("hist"), py::arg("edges"), py::arg("num_bins"), py::arg("skip_zeros") = false,
      py::call_guard<py::gil_scoped_release>());
  // e4m3: the search quantizes to FP8 E4M3 (num_bits=(4, 3)) instead of the integer grid.
  m.def(
      "amax_mse_edges",
      [](const std::vector<int64_t>& counts, const std::vector<float>& edges, int64_t num_bits, bool is_unsigned,
         int64_t start_bin, int64_t stride, bool e4m3) {
        return calib::amax_mse_edges(counts, edges, num_bits, is_unsigned, start_bin, stride,
                                     e4m3 ? QuantFormat::kE4M3 : QuantFormat::kInt);
      },
      py::arg("counts"), py::arg("edges"), py::arg("num_bits") = 8, py::arg("unsigned") = false,
      py::arg("start_bin") = 128, py::arg("stride") = 1, py::arg("e4m3") = false,
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "amax_mse",
      [](const std::vector<int64_t>& counts, double width, int64_t num_bits, bool is_unsigned, int64_t start_bin,
         int64_t stride, bool e4m3) {
        return calib::amax_mse(counts, width, num_bits, is_unsigned, start_bin, stride,
                               e4m3 ? QuantFormat::kE4M3 : QuantFormat::kInt);
      },
      py::arg("counts"), py::arg("width"), py::arg("num_bits") = 8, py::arg("unsigned") = false,
      py::arg("start_bin") = 128, py::arg("stride") = 1, py::arg("e4m3") = false,
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace python
}  // namespace torchqat
