// calibrate(method "auto"): per activation quantizer, the candidate amax whose fake quantization
// costs its layer's output least on the recorded inputs.
#include "calib/auto_choice.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <functional>
#include <limits>

#include "torchqat/nn/quant_add.h"
#include "torchqat/nn/quant_concat.h"
#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_conv_transpose.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_pooling.h"

namespace torchqat::calib::detail {

void RecordingCalibrator::collect(const at::Tensor& x) {
  inner_->collect(x);
  const int64_t b = *batch_;
  if (b >= batches_) return;
  if (static_cast<int64_t>(records_.size()) <= b) records_.resize(b + 1);
  if (static_cast<int64_t>(records_[b].size()) < kMaxCalls) records_[b].push_back(x.detach().clone());
}

void RecordingCalibrator::reset() {
  inner_->reset();
  records_.clear();
}

namespace {

// (label, search, percentile) in tie-breaking order: AUTO_CANDIDATES of auto.py.
struct Candidate {
  const char* label;
  const char* method;
  double percentile;
};
constexpr Candidate kCandidates[] = {{"mse", "mse", 99.99},
                                     {"max", "percentile", 100.0},
                                     {"percentile 99.999", "percentile", 99.999},
                                     {"percentile 99.99", "percentile", 99.99},
                                     {"percentile 99.9", "percentile", 99.9},
                                     {"entropy", "entropy", 99.99}};
// Python records up to this many calls of each layer per batch.
constexpr size_t kCallsPerBatch = 4;

using Call = std::vector<at::Tensor>;
using Forward = std::function<at::Tensor(const Call&)>;

template <typename T>
Forward single(torch::nn::Module& m) {
  auto* t = dynamic_cast<T*>(&m);
  if (!t) return nullptr;
  return [t](const Call& c) { return t->forward(c[0]); };
}

Forward single_input_forward(torch::nn::Module& m) {
  namespace qn = torchqat::nn;
  for (auto f : {single<qn::QuantConv1dImpl>, single<qn::QuantConv2dImpl>, single<qn::QuantConv3dImpl>,
                 single<qn::QuantConvTranspose1dImpl>, single<qn::QuantConvTranspose2dImpl>,
                 single<qn::QuantConvTranspose3dImpl>, single<qn::QuantLinearImpl>, single<qn::QuantMaxPool1dImpl>,
                 single<qn::QuantMaxPool2dImpl>, single<qn::QuantMaxPool3dImpl>, single<qn::QuantAvgPool1dImpl>,
                 single<qn::QuantAvgPool2dImpl>, single<qn::QuantAvgPool3dImpl>,
                 single<qn::QuantAdaptiveAvgPool1dImpl>, single<qn::QuantAdaptiveAvgPool2dImpl>,
                 single<qn::QuantAdaptiveAvgPool3dImpl>}) {
    if (auto fw = f(m)) return fw;
  }
  return nullptr;
}

const std::vector<std::vector<at::Tensor>>* records_of(const TensorQuantizerImpl& q) {
  auto r = std::dynamic_pointer_cast<RecordingCalibrator>(q.calibrator());
  return r ? &r->records() : nullptr;
}

// The recorded calls of one layer holding q, and how to run it. A layer C++ cannot rerun
// (a custom module) gives no calls.
struct Layer {
  Forward forward;
  std::vector<Call> calls;
};

Layer layer_calls(torch::nn::Module& holder, const TensorQuantizerImpl& q) {
  const auto* mine = records_of(q);
  Layer l;
  if (!mine) return l;
  auto per_batch = [&](auto&& split) {
    for (const auto& batch : *mine) {
      auto calls = split(batch);
      if (calls.size() > kCallsPerBatch) calls.resize(kCallsPerBatch);
      l.calls.insert(l.calls.end(), calls.begin(), calls.end());
    }
  };
  if ((l.forward = single_input_forward(holder))) {
    per_batch([](const std::vector<at::Tensor>& b) {
      std::vector<Call> calls;
      for (const auto& x : b) calls.push_back({x});
      return calls;
    });
  } else if (auto* add = dynamic_cast<nn::QuantAddImpl*>(&holder)) {
    l.forward = [add](const Call& c) { return add->forward(c[0], c[1]); };
    if (add->input0_quantizer().get() == add->input1_quantizer().get()) {
      per_batch([](const std::vector<at::Tensor>& b) {  // x, y, x, y, ...: QuantAdd quantizes x first
        std::vector<Call> calls;
        for (size_t i = 0; i + 1 < b.size(); i += 2) calls.push_back({b[i], b[i + 1]});
        return calls;
      });
    } else {
      const bool first = add->input0_quantizer().get() == &q;
      const auto* other = records_of(*(first ? add->input1_quantizer() : add->input0_quantizer()));
      if (!other) return {};
      for (size_t b = 0; b < mine->size() && b < other->size(); ++b) {
        for (size_t i = 0; i < (*mine)[b].size() && i < (*other)[b].size() && i < kCallsPerBatch; ++i) {
          const auto& x = (*mine)[b][i];
          const auto& y = (*other)[b][i];
          l.calls.push_back(first ? Call{x, y} : Call{y, x});
        }
      }
    }
  } else if (auto* cat = dynamic_cast<nn::QuantConcatImpl*>(&holder)) {
    // A concat called once per forward: a batch's inputs are one call.
    l.forward = [cat](const Call& c) { return cat->forward(c); };
    per_batch([](const std::vector<at::Tensor>& b) { return b.empty() ? std::vector<Call>{} : std::vector<Call>{b}; });
  }
  return l;
}

std::vector<at::Tensor> outputs(const Layer& l) {
  std::vector<at::Tensor> out;
  for (const auto& c : l.calls) out.push_back(l.forward(c));
  return out;
}

double squared_error(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& refs) {
  double total = 0.0;
  for (size_t i = 0; i < outs.size(); ++i) {
    total += (outs[i].to(at::kFloat) - refs[i].to(at::kFloat)).square().mean().item<double>();
  }
  return total;
}

// The modules holding q as a direct child, each once.
std::vector<torch::nn::Module*> holders(torch::nn::Module& module, const TensorQuantizerImpl& q) {
  std::vector<torch::nn::Module*> out;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    for (const auto& c : m->children()) {
      if (c.get() == &q && std::find(out.begin(), out.end(), m.get()) == out.end()) out.push_back(m.get());
    }
  }
  return out;
}

}  // namespace

std::vector<AutoChoice> choose_amax(torch::nn::Module& module, const std::vector<QuantizerEntry>& activations,
                                    bool strict) {
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> training;
  for (const auto& m : module.modules(/*include_self=*/true)) training.emplace_back(m, m->is_training());
  module.eval();
  at::NoGradGuard no_grad;
  for (const auto& e : activations) e.quantizer.ptr()->disable();
  std::vector<AutoChoice> choices;
  auto restore = [&] {
    for (const auto& e : activations) {
      auto& q = *e.quantizer.ptr();
      q.enable();
      if (auto r = std::dynamic_pointer_cast<RecordingCalibrator>(q.calibrator())) q.set_calibrator(r->inner());
    }
    for (auto& [m, t] : training) m->train(t);
  };
  try {
    for (const auto& e : activations) {
      auto& q = *e.quantizer.ptr();
      std::vector<std::pair<const Candidate*, at::Tensor>> candidates;
      std::string failures;
      for (const auto& c : kCandidates) {
        AmaxOptions o;
        o.method = c.method;
        o.percentile = c.percentile;
        try {
          if (auto a = q.calibrator()->compute_amax(o)) candidates.emplace_back(&c, *a);
          else failures += std::string(failures.empty() ? "" : "; ") + c.label + ": no data collected";
        } catch (const c10::Error& err) {
          failures += std::string(failures.empty() ? "" : "; ") + c.label + ": " + err.what_without_backtrace();
        }
      }
      if (candidates.empty()) {
        TORCH_CHECK(!strict, "torchqat::calibrate: calibrating quantizer '", e.name, "': no method gave an amax (",
                    failures, ")");
        continue;
      }
      std::vector<Layer> layers;
      for (auto* h : holders(module, q)) {
        auto l = layer_calls(*h, q);
        if (l.forward && !l.calls.empty()) layers.push_back(std::move(l));
      }
      std::vector<std::vector<at::Tensor>> refs;
      for (const auto& l : layers) refs.push_back(outputs(l));  // q is disabled here
      std::vector<double> errors(candidates.size(), 0.0);
      q.enable();
      for (size_t i = 0; i < candidates.size(); ++i) {
        q.set_amax(candidates[i].second);
        for (size_t j = 0; j < layers.size(); ++j) errors[i] += squared_error(outputs(layers[j]), refs[j]);
      }
      q.disable();
      size_t best = 0;  // the first minimum: the tie order above
      for (size_t i = 1; i < errors.size(); ++i) {
        if (errors[i] < errors[best]) best = i;
      }
      q.set_amax(candidates[best].second);
      AutoChoice choice{e.name, candidates[best].first->label, candidates[best].second.item<float>(), {}};
      for (size_t i = 0; i < candidates.size(); ++i) {
        choice.candidates.push_back({candidates[i].first->label, candidates[i].second.item<float>(), errors[i]});
      }
      choices.push_back(std::move(choice));
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return choices;
}

}  // namespace torchqat::calib::detail
