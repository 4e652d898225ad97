// torchqat._C: pybind11 bindings of the C++ API (bindings only; the logic lives in csrc/).
#include <torch/extension.h>

#include "python/bindings.h"
#include "torchqat/build_info.h"
#include "torchqat/checks.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchqat C++ core";
  m.def("cuda_compiled", &torchqat::cuda_compiled, "True when the CUDA kernels were compiled in");
  m.def("version", &torchqat::version);
  m.def("torch_version", &torchqat::torch_version, "The LibTorch version libtorchqat was compiled against");
  m.def("cuda_archs", &torchqat::cuda_archs, "CUDA architectures the kernels were compiled for");
  m.def("set_cuda_amax_checks", &torchqat::set_cuda_amax_checks,
        "Check CUDA amax values (finite, >= 0) on every call; costs a device sync");
  m.def("cuda_amax_checks", &torchqat::cuda_amax_checks, "Whether CUDA amax values are checked (set_cuda_amax_checks)");
  torchqat::python::bind_calibrators(m);
  torchqat::python::bind_flow(m);
  torchqat::python::bind_rules(m);
}
