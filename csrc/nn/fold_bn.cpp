// BatchNorm folding: the float64 arithmetic (shared with Python's torchqat.fold_bn through
// torchqat._C) and the walk over the Sequentials of a C++ module tree.
#include "torchqat/fold_bn.h"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <optional>
#include <unordered_set>

#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_conv_transpose.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_mixin.h"

namespace torchqat {
namespace {

// A foldable layer seen through one interface: its parameters and layout.
struct Layer {
  at::Tensor* weight;
  at::Tensor* bias;
  bool transposed;
  int64_t groups;
  std::function<void()> set_bias_option;  // options.bias(true), so clone() / reset() keep the bias
};

template <typename T>
std::optional<Layer> conv_layer(torch::nn::Module& m) {
  auto* c = dynamic_cast<T*>(&m);
  if (!c) return std::nullopt;
  return Layer{&c->weight, &c->bias, c->options.transposed(), c->options.groups(), [c] { c->options.bias(true); }};
}

template <typename T>
std::optional<Layer> linear_layer(torch::nn::Module& m) {
  auto* l = dynamic_cast<T*>(&m);
  if (!l) return std::nullopt;
  return Layer{&l->weight, &l->bias, false, 1, [l] { l->options.bias(true); }};
}

std::optional<Layer> as_layer(torch::nn::Module& m) {
  namespace tn = torch::nn;
  namespace qn = torchqat::nn;
  for (auto f : {conv_layer<tn::Conv1dImpl>, conv_layer<tn::Conv2dImpl>, conv_layer<tn::Conv3dImpl>,
                 conv_layer<tn::ConvTranspose1dImpl>, conv_layer<tn::ConvTranspose2dImpl>,
                 conv_layer<tn::ConvTranspose3dImpl>, conv_layer<qn::QuantConv1dImpl>, conv_layer<qn::QuantConv2dImpl>,
                 conv_layer<qn::QuantConv3dImpl>, conv_layer<qn::QuantConvTranspose1dImpl>,
                 conv_layer<qn::QuantConvTranspose2dImpl>, conv_layer<qn::QuantConvTranspose3dImpl>,
                 linear_layer<tn::LinearImpl>, linear_layer<qn::QuantLinearImpl>}) {
    if (auto l = f(m)) return l;
  }
  return std::nullopt;
}

// Module::parameters_ is protected; a pointer to it formed in a derived class reaches it on any
// module (the standard way to name a protected base member from outside).
struct ParameterAccess : torch::nn::Module {
  static torch::OrderedDict<std::string, at::Tensor>& of(torch::nn::Module& m) {
    return m.*(&ParameterAccess::parameters_);
  }
};

struct Norm {
  at::Tensor mean, var, gamma, beta;
  double eps;
};

template <typename T>
std::optional<Norm> batch_norm(torch::nn::Module& m) {
  auto* b = dynamic_cast<T*>(&m);
  if (!b) return std::nullopt;
  return Norm{b->running_mean, b->running_var, b->weight, b->bias, b->options.eps()};
}

std::optional<Norm> as_batch_norm(torch::nn::Module& m) {
  if (auto n = batch_norm<torch::nn::BatchNorm1dImpl>(m)) return n;
  if (auto n = batch_norm<torch::nn::BatchNorm2dImpl>(m)) return n;
  return batch_norm<torch::nn::BatchNorm3dImpl>(m);
}

// A per-output-channel weight amax times |s|; any other calibrated weight amax is stale now.
void rescale_weight_amax(torch::nn::Module& layer, const Layer& l, const at::Tensor& s) {
  const auto* mixin = dynamic_cast<const nn::QuantMixin*>(&layer);
  if (!mixin) return;
  auto q = mixin->weight_quantizer();
  if (!q || !q->has_amax()) return;
  const at::Tensor& amax = q->amax();
  const int64_t out_axis = l.transposed ? 1 : 0;
  const auto& axis = q->desc().axis();
  const int64_t dim = l.weight->dim();
  const bool per_out_channel = axis && axis->size() == 1 && (((*axis)[0] % dim) + dim) % dim == out_axis &&
                               amax.numel() == s.numel() && (out_axis == 0 || l.groups == 1);
  if (!per_out_channel) {
    TORCH_WARN("fold_bn: the weight quantizer's amax is not per output channel, so it cannot be rescaled; it is stale "
               "now: recalibrate the weights");
    return;
  }
  q->set_amax((amax.to(at::kDouble) * s.abs().to(amax.device()).reshape(amax.sizes())).to(at::kFloat));
}

}  // namespace

FoldedParameters fold_bn_parameters(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& running_mean,
                                    const at::Tensor& running_var, const at::Tensor& gamma, const at::Tensor& beta,
                                    double eps, bool transposed, int64_t groups) {
  constexpr const char* what = "fold_bn_parameters";
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() >= 2, what, ": weight must be a tensor of 2 or more dims, got ",
                    weight.defined() ? weight.dim() : 0, " dims");
  TORCH_CHECK_VALUE(groups >= 1, what, ": groups must be >= 1, got ", groups);
  TORCH_CHECK_VALUE(running_mean.defined() && running_var.defined(), what,
                    ": the BatchNorm has no running statistics (track_running_stats=false)");
  TORCH_CHECK_VALUE(transposed ? weight.size(0) % groups == 0 : true, what, ": weight dim 0 (", weight.size(0),
                    ") is not a multiple of groups ", groups);
  const int64_t out = transposed ? weight.size(1) * groups : weight.size(0);
  TORCH_CHECK_VALUE(running_mean.numel() == out && running_var.numel() == out, what, ": the BatchNorm has ",
                    running_mean.numel(), " features, the layer ", out, " outputs");
  TORCH_CHECK_VALUE(!bias.defined() || bias.numel() == out, what, ": bias has ", bias.numel(), " values, the layer ",
                    out, " outputs");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, what, ": eps must be finite and >= 0, got ", eps);
  const at::Tensor var = running_var.detach().to(at::kDouble);
  const at::Tensor mean = running_mean.detach().to(at::kDouble);
  const at::Tensor g = gamma.defined() ? gamma.detach().to(at::kDouble) : at::ones_like(var);
  const at::Tensor b = beta.defined() ? beta.detach().to(at::kDouble) : at::zeros_like(var);
  const at::Tensor s = g / at::sqrt(var + eps);
  at::Tensor w64 = weight.detach().to(at::kDouble);
  const auto shape = w64.sizes().vec();
  if (transposed) {
    std::vector<int64_t> grouped = {groups, shape[0] / groups};
    grouped.insert(grouped.end(), shape.begin() + 1, shape.end());
    std::vector<int64_t> s_shape = {groups, 1, shape[1]};
    s_shape.resize(grouped.size(), 1);
    w64 = (w64.reshape(grouped) * s.reshape(s_shape)).reshape(shape);
  } else {
    std::vector<int64_t> s_shape(shape.size(), 1);
    s_shape[0] = -1;
    w64 = w64 * s.reshape(s_shape);
  }
  const at::Tensor b0 = bias.defined() ? bias.detach().to(at::kDouble) : at::zeros_like(mean);
  const at::Tensor b64 = (b0 - mean) * s + b;
  const auto bias_dtype = bias.defined() ? bias.scalar_type() : weight.scalar_type();
  return {w64.to(weight.scalar_type()), b64.to(weight.device(), bias_dtype), s};
}

void fold_conv_bn(torch::nn::Module& layer, torch::nn::Module& bn) {
  auto l = as_layer(layer);
  TORCH_CHECK_TYPE(l.has_value(), "fold_conv_bn: layer must be a Conv, ConvTranspose or Linear module (torch::nn or "
                                  "torchqat::nn), got ", layer.name());
  auto n = as_batch_norm(bn);
  TORCH_CHECK_TYPE(n.has_value(), "fold_conv_bn: bn must be a torch::nn::BatchNorm{1,2,3}d, got ", bn.name());
  const auto f = fold_bn_parameters(*l->weight, *l->bias, n->mean, n->var, n->gamma, n->beta, n->eps, l->transposed,
                                    l->groups);
  at::NoGradGuard no_grad;
  l->weight->copy_(f.weight);
  if (l->bias->defined()) {
    l->bias->copy_(f.bias);
  } else {
    // The layer registered "bias" as an undefined parameter; fill that registration in.
    at::Tensor b = f.bias.set_requires_grad(l->weight->requires_grad());
    auto& params = ParameterAccess::of(layer);
    if (params.contains("bias")) params["bias"] = b;
    else layer.register_parameter("bias", b, l->weight->requires_grad());
    *l->bias = b;
    l->set_bias_option();
  }
  rescale_weight_amax(layer, *l, f.scale);
}

std::vector<std::pair<std::string, std::string>> fold_bn(torch::nn::Module& module) {
  std::vector<std::pair<std::string, std::string>> folded;
  std::unordered_set<const torch::nn::Module*> done, seen_seqs;
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(item.value().get());
    if (!seq || !seen_seqs.insert(seq).second) continue;  // a Sequential registered twice is folded once
    const auto children = seq->named_children();
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (size_t i = 0; i + 1 < children.size(); ++i) {
      auto& layer = *children[i].value();
      auto& bn = *children[i + 1].value();
      if (!as_layer(layer) || !as_batch_norm(bn)) continue;
      const std::string layer_name = prefix + children[i].key(), bn_name = prefix + children[i + 1].key();
      if (done.count(&layer) || done.count(&bn)) {
        TORCH_WARN("fold_bn: '", layer_name, "' + '", bn_name, "' left as they are: already folded where they are "
                   "also registered");
        continue;
      }
      try {
        fold_conv_bn(layer, bn);
      } catch (const c10::ValueError& e) {
        TORCH_WARN("fold_bn: '", layer_name, "' + '", bn_name, "' left as they are: ", e.what_without_backtrace());
        continue;
      }
      done.insert(&layer);
      done.insert(&bn);
      // Sequential::forward calls its AnyModule list, not children_: replace both.
      torch::nn::Identity identity;
      for (auto& any : *seq) {
        if (any.ptr().get() == &bn) any = torch::nn::AnyModule(identity);
      }
      seq->replace_module(children[i + 1].key(), identity.ptr());
      folded.emplace_back(layer_name, bn_name);
    }
  }
  return folded;
}

}  // namespace torchqat
