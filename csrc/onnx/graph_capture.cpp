#include "onnx/graph_capture.h"

#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/fuse_linear.h>

#include <utility>

namespace torchqat::onnx::detail {
namespace {

// Eval mode and requires_grad=false for the duration of the trace. The tracer refuses to record
// a tensor that requires grad as a constant, and parameters are not graph inputs here.
class ExportModeGuard {
 public:
  explicit ExportModeGuard(torch::nn::Module& module) {
    for (const auto& m : module.modules(/*include_self=*/true)) training_.emplace_back(m, m->is_training());
    for (auto& p : module.parameters(/*recurse=*/true)) {
      if (p.requires_grad()) {
        grads_.push_back(p);
        p.requires_grad_(false);
      }
    }
    module.eval();
  }
  ~ExportModeGuard() {
    for (auto& [m, training] : training_) m->train(training);  // train() recurses; parents come first
    for (auto& p : grads_) p.requires_grad_(true);
  }
  ExportModeGuard(const ExportModeGuard&) = delete;
  ExportModeGuard& operator=(const ExportModeGuard&) = delete;

 private:
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> training_;
  std::vector<at::Tensor> grads_;
};

}  // namespace

std::shared_ptr<torch::jit::Graph> capture_graph(torch::nn::Module& module, const ForwardFunction& forward,
                                                 const std::vector<at::Tensor>& example_inputs) {
  ExportModeGuard mode(module);
  torch::NoGradGuard no_grad;

  torch::jit::Stack inputs;
  for (const auto& x : example_inputs) inputs.emplace_back(x.detach());
  const auto traced = [&forward](torch::jit::Stack stack) {
    std::vector<at::Tensor> in;
    in.reserve(stack.size());
    for (auto& v : stack) in.push_back(v.toTensor());
    torch::jit::Stack out;
    for (auto& t : forward(in)) {
      TORCH_CHECK_VALUE(t.defined(), "torchqat::onnx::export_model: forward returned an undefined tensor");
      out.emplace_back(std::move(t));
    }
    return out;
  };
  auto [state, outputs] = torch::jit::tracer::trace(
      std::move(inputs), traced, [](const at::Tensor&) { return std::string(); }, /*strict=*/true,
      /*force_outplace=*/true);
  std::shared_ptr<torch::jit::Graph> graph = state->graph;
  // The C++ tracer records linear as t(weight) + addmm; fold it back so the weight's DQ
  // feeds Gemm directly (TensorRT fuses Q/DQ into a layer only when nothing sits between).
  torch::jit::FuseLinear(graph);
  torch::jit::EliminateDeadCode(graph);
  return graph;
}

}  // namespace torchqat::onnx::detail
