#pragma once
// Internal: records what a forward computes as a TorchScript graph of aten (and torchqat) ops.
#include <torch/csrc/jit/ir/ir.h>
#include <torch/nn/module.h>

#include <memory>
#include <vector>

#include "torchqat/onnx/export.h"

namespace torchqat::onnx::detail {

// Runs forward(example_inputs) once under the JIT tracer, with `module` in eval mode, grad off
// and requires_grad cleared on its parameters (so they are recorded as constants); all of these
// are restored afterwards, also on error. In-place ops are recorded out of place, and nodes
// whose result is unused are removed. The graph's inputs are the example inputs, its outputs
// forward's outputs, in order.
std::shared_ptr<torch::jit::Graph> capture_graph(torch::nn::Module& module, const ForwardFunction& forward,
                                                 const std::vector<at::Tensor>& example_inputs);

}  // namespace torchqat::onnx::detail
