#include "torchqat/nn/quant_lstm.h"

#include <torch/nn/init.h>
#include <torch/nn/functional/dropout.h>

#include <cmath>
#include <string>
#include <utility>

#include "nn/float_module.h"
#include "nn/output_hooks.h"

namespace torchqat::nn {
namespace {

using HiddenPair = std::tuple<at::Tensor, at::Tensor>;

// A quantizer that returns its input unchanged is skipped (no cat / split).
bool bypassed(const TensorQuantizer& q) { return q->disabled() || (!q->quant_enabled() && !q->calib_enabled()); }

// q(cat([a, b], 1)) split back into a's and b's columns: pytorch-quantization's fused layout.
std::pair<at::Tensor, at::Tensor> quant_pair(TensorQuantizer q, const at::Tensor& a, const at::Tensor& b) {
  if (bypassed(q)) return {a, b};
  auto parts = q->forward(at::cat({a, b}, 1)).split_with_sizes({a.size(1), b.size(1)}, 1);
  return {parts[0], parts[1]};
}

void check_size(const char* layer, const char* what, int64_t v) {
  TORCH_CHECK_VALUE(v > 0, layer, ": ", what, " must be greater than zero, got ", v);
}

TensorQuantizer list_item(const torch::nn::ModuleList& list, int64_t l) {
  TORCH_CHECK_INDEX(l >= 0 && l < static_cast<int64_t>(list->size()), "quantizer index ", l, " is out of range [0, ",
                    list->size(), ")");
  return TensorQuantizer(list->ptr<TensorQuantizerImpl>(l));
}

std::string suffix_of(int64_t direction) { return direction == 1 ? "_reverse" : ""; }

}  // namespace

// ----- QuantLSTM ------------------------------------------------------------------------------------

QuantLSTMImpl::QuantLSTMImpl(const torch::nn::LSTMOptions& options, std::optional<QuantDescriptor> quant_desc_input,
                             std::optional<QuantDescriptor> quant_desc_weight)
    : options(options),
      quant_desc_input_(quant_desc_input ? std::move(*quant_desc_input) : default_quant_desc_input()),
      quant_desc_weight_(quant_desc_weight ? std::move(*quant_desc_weight) : default_quant_desc_weight()) {
  reset();
}

QuantLSTMImpl::QuantLSTMImpl(const torch::nn::LSTM& float_module, std::optional<QuantDescriptor> quant_desc_input,
                             std::optional<QuantDescriptor> quant_desc_weight)
    : QuantLSTMImpl(detail::float_options(float_module, kName), std::move(quant_desc_input),
                    std::move(quant_desc_weight)) {
  torch::NoGradGuard no_grad;
  auto src = float_module->named_parameters(/*recurse=*/false);
  auto dst = named_parameters(/*recurse=*/false);
  for (const auto& p : dst) {
    const at::Tensor* s = src.find(p.key());
    TORCH_CHECK_VALUE(s != nullptr, kName, ": float_module has no parameter '", p.key(), "'");
    p.value().set_data(s->detach().clone());
  }
  if (!dst.is_empty()) to(dst.begin()->value().device());
}

void QuantLSTMImpl::reset() {
  check_size(kName, "input_size", options.input_size());
  check_size(kName, "hidden_size", options.hidden_size());
  check_size(kName, "num_layers", options.num_layers());
  TORCH_CHECK_VALUE(options.dropout() >= 0 && options.dropout() <= 1, kName,
                    ": dropout should be a number in range [0, 1], got ", options.dropout());
  TORCH_CHECK_VALUE(options.proj_size() == 0, kName,
                    ": proj_size > 0 (LSTM with projections) is not supported, got proj_size=", options.proj_size());
  const int64_t directions = options.bidirectional() ? 2 : 1;
  const int64_t gate = 4 * options.hidden_size();
  all_weights_.clear();
  for (int64_t layer = 0; layer < options.num_layers(); ++layer) {
    for (int64_t d = 0; d < directions; ++d) {
      const int64_t in = layer == 0 ? options.input_size() : options.hidden_size() * directions;
      const std::string s = std::to_string(layer) + suffix_of(d);
      std::vector<at::Tensor> w;
      w.push_back(register_parameter("weight_ih_l" + s, torch::empty({gate, in})));
      w.push_back(register_parameter("weight_hh_l" + s, torch::empty({gate, options.hidden_size()})));
      if (options.bias()) {
        w.push_back(register_parameter("bias_ih_l" + s, torch::empty({gate})));
        w.push_back(register_parameter("bias_hh_l" + s, torch::empty({gate})));
      }
      all_weights_.push_back(std::move(w));
    }
  }
  reset_parameters();
  torch::nn::ModuleList inputs, weights;
  for (int64_t l = 0; l < options.num_layers() * directions; ++l) {
    inputs->push_back(make_layer_quantizer(kName, "quant_desc_input", quant_desc_input_, 2));
    weights->push_back(make_layer_quantizer(kName, "quant_desc_weight", quant_desc_weight_, 2));
  }
  input_list_ = register_module("_input_quantizers", inputs);
  weight_list_ = register_module("_weight_quantizers", weights);
}

void QuantLSTMImpl::reset_parameters() {
  const double stdv = 1.0 / std::sqrt(static_cast<double>(options.hidden_size()));
  for (auto& p : named_parameters(/*recurse=*/false)) torch::nn::init::uniform_(p.value(), -stdv, stdv);
}

void QuantLSTMImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "torchqat::nn::QuantLSTM(input_size=" << options.input_size()
         << ", hidden_size=" << options.hidden_size() << ", num_layers=" << options.num_layers()
         << ", bias=" << options.bias() << ", batch_first=" << options.batch_first()
         << ", dropout=" << options.dropout() << ", bidirectional=" << options.bidirectional() << ")";
}

TensorQuantizer QuantLSTMImpl::input_quantizer(int64_t l) const { return list_item(input_list_, l); }
TensorQuantizer QuantLSTMImpl::weight_quantizer(int64_t l) const { return list_item(weight_list_, l); }

std::vector<at::Tensor> QuantLSTMImpl::quantized_weights(int64_t l) const {
  const auto& w = all_weights_.at(l);
  auto [w_ih, w_hh] = quant_pair(weight_quantizer(l), w[0], w[1]);
  std::vector<at::Tensor> out{w_ih, w_hh};
  out.insert(out.end(), w.begin() + 2, w.end());
  return out;
}

std::tuple<at::Tensor, std::tuple<at::Tensor, at::Tensor>> QuantLSTMImpl::forward(const at::Tensor& input,
                                                                                   std::optional<HiddenPair> hx) {
  TORCH_CHECK_VALUE(input.dim() == 2 || input.dim() == 3, kName, ": expected input to be 2-D or 3-D, got ",
                    input.dim(), "-D");
  const bool batched = input.dim() == 3;
  const int64_t batch_dim = options.batch_first() ? 0 : 1;
  const at::Tensor x = batched ? input : input.unsqueeze(batch_dim);
  TORCH_CHECK_VALUE(x.size(-1) == options.input_size(), kName, ": input.size(-1) must be equal to input_size. Expected ",
                    options.input_size(), ", got ", x.size(-1));
  const int64_t directions = options.bidirectional() ? 2 : 1;
  const int64_t layers = options.num_layers() * directions;
  const int64_t batch = x.size(batch_dim);
  at::Tensor h0, c0;
  if (hx) {
    std::tie(h0, c0) = *hx;
    if (!batched) {
      TORCH_CHECK_VALUE(h0.dim() == 2 && c0.dim() == 2, kName,
                        ": for unbatched 2-D input, h_0 and c_0 should also be 2-D, got ", h0.dim(), "-D and ",
                        c0.dim(), "-D");
      h0 = h0.unsqueeze(1);
      c0 = c0.unsqueeze(1);
    }
    const std::vector<int64_t> expected{layers, batch, options.hidden_size()};
    TORCH_CHECK_VALUE(h0.sizes() == expected, kName, ": expected hidden[0] size ", c10::IntArrayRef(expected), ", got ",
                      h0.sizes());
    TORCH_CHECK_VALUE(c0.sizes() == expected, kName, ": expected hidden[1] size ", c10::IntArrayRef(expected), ", got ",
                      c0.sizes());
  } else {
    h0 = torch::zeros({layers, batch, options.hidden_size()}, x.options());
    c0 = h0;
  }
  std::vector<std::vector<at::Tensor>> weights;
  bool all_bypassed = true;
  for (int64_t l = 0; l < layers; ++l) {
    weights.push_back(quantized_weights(l));
    all_bypassed = all_bypassed && bypassed(input_quantizer(l));
  }
  at::Tensor output, hn, cn;
  if (all_bypassed) {
    std::vector<at::Tensor> flat;
    for (const auto& w : weights) flat.insert(flat.end(), w.begin(), w.end());
    std::tie(output, hn, cn) = torch::lstm(x, {h0, c0}, flat, options.bias(), options.num_layers(), options.dropout(),
                                           is_training(), options.bidirectional(), options.batch_first());
  } else {
    // Step by step: the input quantizer sees cat([x_t, h_{t-1}]) at every step.
    at::Tensor seq = options.batch_first() ? x.transpose(0, 1) : x;
    std::vector<at::Tensor> hs, cs;
    for (int64_t layer = 0; layer < options.num_layers(); ++layer) {
      std::vector<at::Tensor> outs;
      for (int64_t d = 0; d < directions; ++d) {
        const int64_t l = layer * directions + d;
        const auto& w = weights[l];
        const at::Tensor b_ih = options.bias() ? w[2] : at::Tensor();
        const at::Tensor b_hh = options.bias() ? w[3] : at::Tensor();
        TensorQuantizer iq = input_quantizer(l);
        at::Tensor h = h0[l], c = c0[l];
        const int64_t steps = seq.size(0);
        std::vector<at::Tensor> ys(steps);
        for (int64_t i = 0; i < steps; ++i) {
          const int64_t t = d == 1 ? steps - 1 - i : i;
          auto [xq, hq] = quant_pair(iq, seq[t], h);
          std::tie(h, c) = torch::lstm_cell(xq, {hq, c}, w[0], w[1], b_ih, b_hh);
          ys[t] = h;
        }
        outs.push_back(torch::stack(ys, 0));
        hs.push_back(h);
        cs.push_back(c);
      }
      seq = directions == 1 ? outs[0] : torch::cat(outs, -1);
      if (options.dropout() > 0 && is_training() && layer < options.num_layers() - 1) {
        seq = torch::dropout(seq, options.dropout(), /*train=*/true);
      }
    }
    output = options.batch_first() ? seq.transpose(0, 1) : seq;
    hn = torch::stack(hs, 0);
    cn = torch::stack(cs, 0);
  }
  if (!batched) {
    output = output.squeeze(batch_dim);
    hn = hn.squeeze(1);
    cn = cn.squeeze(1);
  }
  detail::notify_output(*this, {output, hn, cn});
  return {output, {hn, cn}};
}

DefaultQuantDescriptor& QuantLSTMImpl::input_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_per_tensor());
  return d;
}

DefaultQuantDescriptor& QuantLSTMImpl::weight_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_weight_per_channel());
  return d;
}

QuantDescriptor QuantLSTMImpl::default_quant_desc_input() { return input_default().get(); }
QuantDescriptor QuantLSTMImpl::default_quant_desc_weight() { return weight_default().get(); }
void QuantLSTMImpl::set_default_quant_desc_input(QuantDescriptor desc) { input_default().set(std::move(desc)); }
void QuantLSTMImpl::set_default_quant_desc_weight(QuantDescriptor desc) { weight_default().set(std::move(desc)); }

// ----- QuantLSTMCell --------------------------------------------------------------------------------

QuantLSTMCellImpl::QuantLSTMCellImpl(const torch::nn::LSTMCellOptions& options,
                                     std::optional<QuantDescriptor> quant_desc_input,
                                     std::optional<QuantDescriptor> quant_desc_weight)
    : options(options),
      quant_desc_input_(quant_desc_input ? std::move(*quant_desc_input)
                                         : QuantLSTMImpl::default_quant_desc_input()),
      quant_desc_weight_(quant_desc_weight ? std::move(*quant_desc_weight)
                                           : QuantLSTMImpl::default_quant_desc_weight()) {
  reset();
}

QuantLSTMCellImpl::QuantLSTMCellImpl(const torch::nn::LSTMCell& float_module,
                                     std::optional<QuantDescriptor> quant_desc_input,
                                     std::optional<QuantDescriptor> quant_desc_weight)
    : QuantLSTMCellImpl(detail::float_options(float_module, kName), std::move(quant_desc_input),
                        std::move(quant_desc_weight)) {
  torch::NoGradGuard no_grad;
  weight_ih.set_data(float_module->weight_ih.detach().clone());
  weight_hh.set_data(float_module->weight_hh.detach().clone());
  if (options.bias()) {
    bias_ih.set_data(float_module->bias_ih.detach().clone());
    bias_hh.set_data(float_module->bias_hh.detach().clone());
  }
  to(weight_ih.device());
}

void QuantLSTMCellImpl::reset() {
  check_size(kName, "input_size", options.input_size());
  check_size(kName, "hidden_size", options.hidden_size());
  const int64_t gate = 4 * options.hidden_size();
  weight_ih = register_parameter("weight_ih", torch::empty({gate, options.input_size()}));
  weight_hh = register_parameter("weight_hh", torch::empty({gate, options.hidden_size()}));
  if (options.bias()) {
    bias_ih = register_parameter("bias_ih", torch::empty({gate}));
    bias_hh = register_parameter("bias_hh", torch::empty({gate}));
  } else {
    bias_ih = register_parameter("bias_ih", {}, /*requires_grad=*/false);
    bias_hh = register_parameter("bias_hh", {}, /*requires_grad=*/false);
  }
  reset_parameters();
  input_quantizer_ =
      register_module("_input_quantizer", make_layer_quantizer(kName, "quant_desc_input", quant_desc_input_, 2));
  weight_quantizer_ =
      register_module("_weight_quantizer", make_layer_quantizer(kName, "quant_desc_weight", quant_desc_weight_, 2));
}

void QuantLSTMCellImpl::reset_parameters() {
  const double stdv = 1.0 / std::sqrt(static_cast<double>(options.hidden_size()));
  for (auto& p : named_parameters(/*recurse=*/false)) {
    if (p.value().defined()) torch::nn::init::uniform_(p.value(), -stdv, stdv);
  }
}

void QuantLSTMCellImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "torchqat::nn::QuantLSTMCell(input_size=" << options.input_size()
         << ", hidden_size=" << options.hidden_size() << ", bias=" << options.bias() << ")";
}

std::tuple<at::Tensor, at::Tensor> QuantLSTMCellImpl::forward(const at::Tensor& input, std::optional<HiddenPair> hx) {
  TORCH_CHECK_VALUE(input.dim() == 1 || input.dim() == 2, kName, ": expected input to be 1-D or 2-D, got ",
                    input.dim(), "-D");
  const bool batched = input.dim() == 2;
  const at::Tensor x = batched ? input : input.unsqueeze(0);
  TORCH_CHECK_VALUE(x.size(1) == options.input_size(), kName, ": input has inconsistent input_size: got ", x.size(1),
                    ", expected ", options.input_size());
  at::Tensor h, c;
  if (hx) {
    std::tie(h, c) = *hx;
    if (!batched) {
      h = h.unsqueeze(0);
      c = c.unsqueeze(0);
    }
    const std::vector<int64_t> expected{x.size(0), options.hidden_size()};
    TORCH_CHECK_VALUE(h.sizes() == expected && c.sizes() == expected, kName, ": expected h_0 and c_0 of size ",
                      c10::IntArrayRef(expected), ", got ", h.sizes(), " and ", c.sizes());
  } else {
    h = torch::zeros({x.size(0), options.hidden_size()}, x.options());
    c = h;
  }
  auto [w_ih, w_hh] = quant_pair(weight_quantizer_, weight_ih, weight_hh);
  auto [xq, hq] = quant_pair(input_quantizer_, x, h);
  auto [h1, c1] = torch::lstm_cell(xq, {hq, c}, w_ih, w_hh, bias_ih, bias_hh);
  if (!batched) {
    h1 = h1.squeeze(0);
    c1 = c1.squeeze(0);
  }
  detail::notify_output(*this, {h1, c1});
  return {h1, c1};
}

}  // namespace torchqat::nn
