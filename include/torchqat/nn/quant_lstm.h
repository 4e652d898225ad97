#pragma once
// Quantized LSTM and LSTMCell in the style of torch::nn::LSTM / torch::nn::LSTMCell.
//
//   auto lstm = torchqat::nn::QuantLSTM(torch::nn::LSTMOptions(16, 32).num_layers(2).bidirectional(true));
//   auto [y, hc] = lstm(x);                        // x [T, B, 16] (or [B, T, 16] with batch_first)
//   auto q = torchqat::nn::QuantLSTM(float_lstm);  // weights copied from a torch::nn::LSTM
//
// The quantizer layout is pytorch-quantization's: layer x direction l has `_input_quantizers.l`,
// applied at every step to cat([x_t, h_{t-1}], 1), and `_weight_quantizers.l`, per row (axis 0)
// on cat([W_ih, W_hh], 1), so state-dict keys match the Python QuantLSTM. With every input
// quantizer bypassed the stack is one torch::lstm call (torch::nn::LSTM's own, so disabled
// quantizers give its result bit for bit); otherwise each step is a torch::lstm_cell. proj_size
// must be 0. QuantLSTMCell has `_input_quantizer` / `_weight_quantizer` with the same meaning.
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/rnn.h>
#include <torch/nn/options/rnn.h>

#include <optional>
#include <ostream>
#include <tuple>
#include <vector>

#include "torchqat/nn/quant_mixin.h"

namespace torchqat::nn {

class QuantLSTMImpl : public torch::nn::Cloneable<QuantLSTMImpl> {
 public:
  static constexpr const char* kName = "QuantLSTM";
  QuantLSTMImpl(int64_t input_size, int64_t hidden_size)
      : QuantLSTMImpl(torch::nn::LSTMOptions(input_size, hidden_size)) {}
  // A descriptor left std::nullopt takes the class default (input per tensor, weight per row).
  explicit QuantLSTMImpl(const torch::nn::LSTMOptions& options,
                         std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                         std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantLSTMImpl(const torch::nn::LSTM& float_module,
                         std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                         std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);

  void reset() override;
  // torch::nn::LSTM's initialization: every parameter uniform in +-1/sqrt(hidden_size).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // (output, (h_n, c_n)) as torch::nn::LSTM returns them; hx defaults to zeros.
  std::tuple<at::Tensor, std::tuple<at::Tensor, at::Tensor>> forward(
      const at::Tensor& input, std::optional<std::tuple<at::Tensor, at::Tensor>> hx = {});

  // One pair per layer x direction, in torch's order (layer-major, forward before reverse).
  TensorQuantizer input_quantizer(int64_t l) const;
  TensorQuantizer weight_quantizer(int64_t l) const;
  int64_t num_quantizer_pairs() const { return static_cast<int64_t>(input_list_->size()); }
  // weight_ih, weight_hh[, bias_ih, bias_hh] of layer x direction l.
  const std::vector<at::Tensor>& layer_parameters(int64_t l) const { return all_weights_.at(l); }

  static QuantDescriptor default_quant_desc_input();
  static QuantDescriptor default_quant_desc_weight();
  static void set_default_quant_desc_input(QuantDescriptor desc);
  static void set_default_quant_desc_weight(QuantDescriptor desc);

  torch::nn::LSTMOptions options;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(std::optional<std::tuple<at::Tensor, at::Tensor>>())})

 private:
  static DefaultQuantDescriptor& input_default();
  static DefaultQuantDescriptor& weight_default();
  std::vector<at::Tensor> quantized_weights(int64_t l) const;

  QuantDescriptor quant_desc_input_;
  QuantDescriptor quant_desc_weight_;
  std::vector<std::vector<at::Tensor>> all_weights_;
  torch::nn::ModuleList input_list_{nullptr};
  torch::nn::ModuleList weight_list_{nullptr};
};
TORCH_MODULE(QuantLSTM);

class QuantLSTMCellImpl : public torch::nn::Cloneable<QuantLSTMCellImpl>, public QuantMixin {
 public:
  static constexpr const char* kName = "QuantLSTMCell";
  QuantLSTMCellImpl(int64_t input_size, int64_t hidden_size)
      : QuantLSTMCellImpl(torch::nn::LSTMCellOptions(input_size, hidden_size)) {}
  explicit QuantLSTMCellImpl(const torch::nn::LSTMCellOptions& options,
                             std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                             std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantLSTMCellImpl(const torch::nn::LSTMCell& float_module,
                             std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                             std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  // (h_1, c_1) for input [B, input_size] (or unbatched [input_size]); hx defaults to zeros.
  std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& input,
                                             std::optional<std::tuple<at::Tensor, at::Tensor>> hx = {});

  TensorQuantizer input_quantizer() const override { return input_quantizer_; }
  TensorQuantizer weight_quantizer() const override { return weight_quantizer_; }

  torch::nn::LSTMCellOptions options;
  at::Tensor weight_ih;
  at::Tensor weight_hh;
  at::Tensor bias_ih;  // undefined when options.bias() is false
  at::Tensor bias_hh;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(std::optional<std::tuple<at::Tensor, at::Tensor>>())})

 private:
  QuantDescriptor quant_desc_input_;
  QuantDescriptor quant_desc_weight_;
  TensorQuantizer input_quantizer_{nullptr};
  TensorQuantizer weight_quantizer_{nullptr};
};
TORCH_MODULE(QuantLSTMCell);

}  // namespace torchqat::nn
