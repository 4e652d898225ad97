#pragma once
// Internal: forward hooks on the outputs of C++ modules, for the tools that need a layer's output
// (FeatureDistillationLoss). LibTorch has no forward hooks: a parent calls its children's forward
// directly. Two kinds of module can still be observed:
//   - torchqat's quantized modules (QuantConv*, QuantConvTranspose*, QuantLinear, QuantAdd,
//     QuantConcat, the poolings, QuantLSTM, QuantLSTMCell) and TensorQuantizer: their forward
//     reports its output (notify_output);
//   - an item of a torch::nn::Sequential taking and returning one tensor: Sequential::forward calls
//     its items through AnyModule entries, and the entry is swapped for a wrapper that reports the
//     item's output while a hook is on it (the registered child, state dict and names do not change).
// A non-empty Sequential itself is observed through its last item, whose output is its output.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace torchqat::nn::detail {

using OutputHook = std::function<void(const std::vector<at::Tensor>&)>;

// How many hooks are installed in the process: the quantized modules' forward does nothing more
// than read it while there are none.
extern std::atomic<int64_t> g_output_hook_count;

void call_output_hooks(const torch::nn::Module& module, const std::vector<at::Tensor>& outputs);

inline void notify_output(const torch::nn::Module& module, const at::Tensor& output) {
  if (g_output_hook_count.load(std::memory_order_relaxed) > 0) call_output_hooks(module, {output});
}
// A module returning several tensors (QuantLSTM: output, h_n, c_n) reports them in order.
inline void notify_output(const torch::nn::Module& module, std::initializer_list<at::Tensor> outputs) {
  if (g_output_hook_count.load(std::memory_order_relaxed) > 0) call_output_hooks(module, outputs);
}

// Removes its hook when destroyed (or on remove()); movable.
class OutputHookHandle {
 public:
  OutputHookHandle();
  OutputHookHandle(OutputHookHandle&& other) noexcept;
  OutputHookHandle& operator=(OutputHookHandle&& other) noexcept;
  OutputHookHandle(const OutputHookHandle&) = delete;
  OutputHookHandle& operator=(const OutputHookHandle&) = delete;
  ~OutputHookHandle();
  void remove();

 private:
  friend OutputHookHandle add_output_hook(const std::shared_ptr<torch::nn::Module>&, const std::string&, OutputHook);
  struct State;
  std::unique_ptr<State> state_;
};

// Hooks the output of root's submodule `name` (a path of root.named_modules(); "" is root). Errors
// (c10::ValueError): no such module; a module C++ cannot observe (see above), naming its type.
OutputHookHandle add_output_hook(const std::shared_ptr<torch::nn::Module>& root, const std::string& name,
                                 OutputHook hook);

// Whether add_output_hook can observe root's submodule `name` (which must exist).
bool can_hook_output(torch::nn::Module& root, const std::string& name);

}  // namespace torchqat::nn::detail
