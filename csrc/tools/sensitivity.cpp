// sensitivity / partial_quantize: score the model with layers made float by disabling their
// quantizers under a QuantStateGuard, so every switch comes back.
#include "torchqat/tools/sensitivity.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <regex>
#include <sstream>
#include <unordered_set>

#include "nn/name_pattern.h"
#include "torchqat/nn/quant_lstm.h"
#include "torchqat/quantizers.h"

namespace torchqat::tools {
namespace {

using Layers = std::vector<std::pair<std::string, std::vector<TensorQuantizer>>>;

void make_float(const Layers& layers, const std::string& except = "\x01") {
  for (const auto& [name, qs] : layers) {
    if (name == except) continue;
    for (const auto& q : qs) q.ptr()->disable();
  }
}

double score(const EvalFunction& eval_fn) { return eval_fn(); }

std::string format(const char* fmt, double v, int width) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, width, v);
  return buf;
}

}  // namespace

const char* to_string(SensitivityMode mode) {
  return mode == SensitivityMode::kOneAtATime ? "one_at_a_time" : "all_but_one";
}

Layers quantized_layers(torch::nn::Module& module) {
  Layers out;
  std::unordered_set<const torch::nn::Module*> lstm_lists;  // a QuantLSTM's quantizer lists are its slots
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    const auto* m = item.value().get();
    if (dynamic_cast<const TensorQuantizerImpl*>(m) || lstm_lists.count(m)) continue;
    std::vector<TensorQuantizer> qs;
    if (const auto* lstm = dynamic_cast<const nn::QuantLSTMImpl*>(m)) {
      for (const auto& child : item.value()->children()) lstm_lists.insert(child.get());
      for (int64_t l = 0; l < lstm->num_quantizer_pairs(); ++l) {
        qs.push_back(lstm->input_quantizer(l));
        qs.push_back(lstm->weight_quantizer(l));
      }
    } else {
      for (const auto& child : item.value()->children()) {
        if (auto q = std::dynamic_pointer_cast<TensorQuantizerImpl>(child)) qs.emplace_back(q);
      }
    }
    bool enabled = false;
    for (const auto& q : qs) enabled = enabled || !q->disabled();
    if (enabled) out.emplace_back(item.key(), std::move(qs));
  }
  return out;
}

SensitivityTable sensitivity(torch::nn::Module& module, const EvalFunction& eval_fn, const SensitivityOptions& o) {
  TORCH_CHECK_VALUE(static_cast<bool>(eval_fn), "sensitivity: eval_fn is empty; give a function returning a score");
  const auto all = quantized_layers(module);
  TORCH_CHECK_VALUE(!all.empty(), "sensitivity: the module has no enabled quantizers (quantize it first)");
  Layers chosen = all;
  if (!o.layers().empty()) {
    std::vector<std::regex> patterns;
    for (const auto& p : o.layers()) patterns.emplace_back(nn::detail::glob_to_regex(p));
    chosen.clear();
    for (const auto& l : all) {
      for (const auto& re : patterns) {
        if (std::regex_match(l.first, re)) {
          chosen.push_back(l);
          break;
        }
      }
    }
    std::ostringstream names;
    for (size_t i = 0; i < all.size() && i < 10; ++i) names << (i ? ", " : "") << all[i].first;
    TORCH_CHECK_VALUE(!chosen.empty(), "sensitivity: layers matches no quantized layer (quantized layers: ",
                      names.str(), all.size() > 10 ? ", ..." : "", ")");
  }
  SensitivityTable t{o.mode(), 0.0, 0.0, {}, o.higher_is_better()};
  t.quant_score = score(eval_fn);
  {
    QuantStateGuard guard(module);
    make_float(all);
    t.float_score = score(eval_fn);
  }
  const double sign = o.higher_is_better() ? 1.0 : -1.0;
  for (const auto& [name, qs] : chosen) {
    QuantStateGuard guard(module);
    double s;
    if (o.mode() == SensitivityMode::kOneAtATime) {
      make_float(all, name);
      s = score(eval_fn);
      t.rows.push_back({0, name, s, sign * (t.float_score - s)});
    } else {
      for (const auto& q : qs) q.ptr()->disable();
      s = score(eval_fn);
      t.rows.push_back({0, name, s, sign * (s - t.quant_score)});
    }
  }
  std::stable_sort(t.rows.begin(), t.rows.end(), [](const SensitivityRow& a, const SensitivityRow& b) {
    const double ka = std::isnan(a.sensitivity) ? std::numeric_limits<double>::infinity() : -a.sensitivity;
    const double kb = std::isnan(b.sensitivity) ? std::numeric_limits<double>::infinity() : -b.sensitivity;
    return ka < kb;
  });
  for (size_t i = 0; i < t.rows.size(); ++i) t.rows[i].rank = static_cast<int64_t>(i) + 1;
  return t;
}

std::vector<std::string> SensitivityTable::most_sensitive(int64_t n) const {
  std::vector<std::string> out;
  for (int64_t i = 0; i < n && i < static_cast<int64_t>(rows.size()); ++i) out.push_back(rows[i].layer);
  return out;
}

std::string SensitivityTable::str() const {
  const bool one = mode == SensitivityMode::kOneAtATime;
  size_t width = 5;
  for (const auto& r : rows) width = std::max(width, r.layer.size());
  std::ostringstream s;
  s << "sensitivity (" << to_string(mode) << ": score with "
    << (one ? "only this layer quantized" : "all layers but this quantized") << "); float "
    << format("%.*g", float_score, 6) << ", fully quantized " << format("%.*g", quant_score, 6) << "\n";
  auto pad = [](const std::string& x, size_t w) { return x + std::string(w > x.size() ? w - x.size() : 0, ' '); };
  s << "rank  " << pad("layer", width) << "         score   sensitivity";
  for (const auto& r : rows) {
    char rank[16];
    std::snprintf(rank, sizeof(rank), "%4lld", static_cast<long long>(r.rank));
    char nums[64];
    std::snprintf(nums, sizeof(nums), "%12.6g  %12.6g", r.score, r.sensitivity);
    s << "\n" << rank << "  " << pad(r.layer, width) << "  " << nums;
  }
  return s.str();
}

std::vector<std::string> partial_quantize(torch::nn::Module& module, const SensitivityTable& table, int64_t n) {
  TORCH_CHECK_VALUE(n >= 0, "partial_quantize: n must be >= 0, got ", n);
  const auto names = table.most_sensitive(n);
  const auto layers = quantized_layers(module);
  for (const auto& name : names) {
    bool found = false;
    for (const auto& [lname, qs] : layers) {
      if (lname != name) continue;
      found = true;
      for (const auto& q : qs) q.ptr()->disable();
    }
    TORCH_CHECK_VALUE(found, "partial_quantize: the table's layer '", name,
                      "' is not a quantized layer of this module (a table of another model?)");
  }
  return names;
}

std::vector<std::string> partial_quantize(torch::nn::Module& module, const EvalFunction& eval_fn, int64_t n,
                                          const SensitivityOptions& options) {
  TORCH_CHECK_VALUE(n >= 0, "partial_quantize: n must be >= 0, got ", n);
  return partial_quantize(module, sensitivity(module, eval_fn, options), n);
}

}  // namespace torchqat::tools
