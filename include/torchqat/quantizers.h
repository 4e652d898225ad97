#pragma once
// Model-level quantizer state: every TensorQuantizer of a module tree with its role, one switch
// for all of them, and RAII guards that turn quantization off (or on) over a scope.
//
//   for (const auto& q : torchqat::quantizers(*model)) std::cout << q.name << " " << to_string(q.role) << "\n";
//   torchqat::set_mode(*model, torchqat::Mode::kDisabled);       // float training
//   {
//     auto off = torchqat::disable_quantization(*model);          // float reference inside the scope
//     reference = model->forward(x);
//   }                                                             // each quantizer's state is back
#include <torch/nn/module.h>

#include <optional>
#include <string>
#include <vector>

#include "torchqat/tensor_quantizer.h"

namespace torchqat {

// What a quantizer quantizes. kWeight: a layer's weight (QuantConv*, QuantConvTranspose*,
// QuantLinear, QuantLSTM / QuantLSTMCell); kInput: everything else (layer inputs, QuantAdd /
// QuantConcat / pooling inputs, and quantizers held directly by a custom module).
enum class Role { kInput, kWeight };
const char* to_string(Role role);

struct QuantizerEntry {
  std::string name;  // module path, e.g. "features.0._weight_quantizer"
  TensorQuantizer quantizer;
  Role role;
};

// Every TensorQuantizer under module (module itself included), in tree order, each once: a
// quantizer registered under several names is listed under the first. The role comes from the
// module that owns the quantizer (a quantized layer's weight_quantizer() is kWeight), not from
// its name. Disabled quantizers are listed too.
std::vector<QuantizerEntry> quantizers(torch::nn::Module& module);

// kQuant: quantize with amax (calibration off); kCalib: collect statistics, pass data through
// unquantized; kDisabled: pass data through untouched (disable()). kQuant and kCalib enable the
// quantizer.
enum class Mode { kQuant, kCalib, kDisabled };
const char* to_string(Mode mode);

// Sets every quantizer under module (or only those of `role`) to mode.
void set_mode(torch::nn::Module& module, Mode mode, std::optional<Role> role = std::nullopt);

// Saves the disabled / quant / calib switches of every quantizer under a module and puts them
// back when it goes out of scope (also when an exception unwinds it). Movable, not copyable.
class QuantStateGuard {
 public:
  explicit QuantStateGuard(torch::nn::Module& module);
  ~QuantStateGuard();
  QuantStateGuard(QuantStateGuard&& other) noexcept;
  QuantStateGuard& operator=(QuantStateGuard&&) = delete;
  QuantStateGuard(const QuantStateGuard&) = delete;
  QuantStateGuard& operator=(const QuantStateGuard&) = delete;
  // Puts the saved switches back now (the destructor then does nothing).
  void restore();

 private:
  struct Saved {
    TensorQuantizer quantizer;
    bool disabled, quant, calib;
  };
  std::vector<Saved> saved_;
};

// pytorch-quantization's disable_quantization / enable_quantization helpers as RAII guards:
// every quantizer under module is disabled (enabled) until the returned guard is destroyed.
[[nodiscard]] QuantStateGuard disable_quantization(torch::nn::Module& module);
[[nodiscard]] QuantStateGuard enable_quantization(torch::nn::Module& module);

}  // namespace torchqat
