#pragma once
// Per-layer quantization sensitivity and partial quantization, the C++ counterparts of
// torchqat.tools.sensitivity / partial_quantize:
//
//   auto table = torchqat::tools::sensitivity(*model, [&] { return accuracy(model, val); },
//       torchqat::tools::SensitivityOptions().mode(torchqat::tools::SensitivityMode::kAllButOne));
//   std::cout << table.str();                                   // ranked, most sensitive first
//   torchqat::tools::partial_quantize(*model, table, 3);        // the 3 most sensitive stay float
//
// A "layer" is a module holding TensorQuantizers as direct children (QuantConv2d, QuantLinear,
// QuantAdd, ...) with at least one enabled; a QuantLSTM is one layer (its per-layer quantizer
// lists are its slots). eval_fn returns a score, higher is better unless
// higher_is_better(false) (a loss); it runs the model itself (no_grad / eval mode are its choice).
//   kOneAtATime: only that layer quantized, the rest float; sensitivity = float score - score.
//   kAllButOne: every layer quantized but that one; sensitivity = score - fully quantized score.
// A layer is made float for an evaluation by disabling its quantizers; every switch is restored
// afterwards, also when eval_fn throws. (C++ modules call their quantizer members directly, so a
// quantizer shared by two layers is float for both while either is evaluated as float.)
#include <torch/arg.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "torchqat/tensor_quantizer.h"

namespace torchqat::tools {

enum class SensitivityMode { kOneAtATime, kAllButOne };
const char* to_string(SensitivityMode mode);

struct SensitivityOptions {
  TORCH_ARG(SensitivityMode, mode) = SensitivityMode::kOneAtATime;
  // fnmatch globs matched against layer names, restricting the layers analysed (empty: all).
  TORCH_ARG(std::vector<std::string>, layers) = {};
  TORCH_ARG(bool, higher_is_better) = true;
};

struct SensitivityRow {
  int64_t rank;  // 1 = most sensitive
  std::string layer;
  double score;
  double sensitivity;
};

struct SensitivityTable {
  SensitivityMode mode;
  double float_score;
  double quant_score;
  std::vector<SensitivityRow> rows;  // ranked; NaN sensitivities last
  bool higher_is_better;
  // The names of the n most sensitive layers (fewer when the table is shorter).
  std::vector<std::string> most_sensitive(int64_t n) const;
  // The table as text, as Python's str(SensitivityTable) prints it.
  std::string str() const;
};

using EvalFunction = std::function<double()>;

// (name, the quantizers it holds directly) of every layer with an enabled quantizer, in tree order.
std::vector<std::pair<std::string, std::vector<TensorQuantizer>>> quantized_layers(torch::nn::Module& module);

SensitivityTable sensitivity(torch::nn::Module& module, const EvalFunction& eval_fn,
                             const SensitivityOptions& options = {});

// Disables the quantizers of the n most sensitive layers of table; returns their names.
std::vector<std::string> partial_quantize(torch::nn::Module& module, const SensitivityTable& table, int64_t n);
// Runs sensitivity (mode kAllButOne unless options say otherwise) first.
std::vector<std::string> partial_quantize(torch::nn::Module& module, const EvalFunction& eval_fn, int64_t n,
                                          const SensitivityOptions& options =
                                              SensitivityOptions().mode(SensitivityMode::kAllButOne));

}  // namespace torchqat::tools
