// share_scales: which quantizer reads which traced value (a quantizer-call observer during the
// exporter's trace), scale domains joined over the graph's cat / add / max-pool / pass-through
// nodes (python/torchqat/placement.py's rules), then one quantizer object per domain.
#include "torchqat/share_scales.h"

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "onnx/graph_capture.h"
#include "quantizer/call_observer.h"
#include "torchqat/nn/quant_add.h"
#include "torchqat/nn/quant_lstm.h"
#include "torchqat/nn/quant_mixin.h"
#include "torchqat/quantizers.h"

namespace torchqat {
namespace {

using torch::jit::Node;
using torch::jit::Value;

const std::vector<std::string> kRules = {"concat", "maxpool", "add"};
const std::vector<std::string> kLabels = {"concat", "maxpool", "add", "passthrough", "existing"};
const std::set<std::string> kCat = {"aten::cat", "aten::concat", "aten::concatenate"};
const std::set<std::string> kAdd = {"aten::add", "aten::add_"};
const std::set<std::string> kMaxPool = {"aten::max_pool1d", "aten::max_pool2d", "aten::max_pool3d"};
const std::set<std::string> kPass = {
    "aten::upsample_nearest1d", "aten::upsample_nearest2d", "aten::upsample_nearest3d", "aten::view",
    "aten::reshape", "aten::_unsafe_view", "aten::flatten", "aten::unflatten", "aten::permute", "aten::transpose",
    "aten::squeeze", "aten::unsqueeze", "aten::contiguous", "aten::view_as", "aten::reshape_as", "aten::dropout",
    "aten::feature_dropout", "aten::alpha_dropout"};

std::string kind(const Node* n) { return n->kind().toQualString(); }

bool is_quantizer_op(const Node* n) {
  const std::string k = kind(n);
  return k == "torchqat::fake_quant" || k == "torchqat::fake_quant_e4m3";
}

// The tensor a value quantizes: through the quantizers' own fake-quant nodes.
Value* source(Value* v) {
  while (is_quantizer_op(v->node())) v = v->node()->input(0);
  return v;
}

bool is_tensor(const Value* v) { return v->type()->cast<c10::TensorType>() != nullptr; }

struct Site {
  std::string path, owner, attr;
  TensorQuantizer quantizer;
  Value* value;
  int64_t order;
};

class UnionFind {
 public:
  Value* find(Value* x) {
    auto it = parent_.find(x);
    if (it == parent_.end()) {
      parent_[x] = x;
      return x;
    }
    Value* root = x;
    while (parent_[root] != root) root = parent_[root];
    while (parent_[x] != root) {
      Value* next = parent_[x];
      parent_[x] = root;
      x = next;
    }
    return root;
  }
  Value* unite(Value* a, Value* b) {
    Value* ra = find(a);
    Value* rb = find(b);
    if (ra != rb) parent_[rb] = ra;
    return ra;
  }

 private:
  std::unordered_map<Value*, Value*> parent_;
};

using Signature = std::tuple<bool, int64_t, bool, bool, bool, bool, std::optional<double>, std::optional<std::vector<int64_t>>>;

Signature signature(const TensorQuantizerImpl& q) {
  const auto& d = q.desc();
  return {d.is_e4m3(), d.num_bits(), d.is_unsigned(), d.narrow_range(), d.fake_quant(), d.learn_amax(), d.scale_amax(),
          d.axis()};
}

std::string differs(const TensorQuantizerImpl& q, const TensorQuantizerImpl& major) {
  const auto& a = q.desc();
  const auto& b = major.desc();
  std::ostringstream s;
  if (a.is_e4m3() != b.is_e4m3()) s << "format differs from the group's";
  else if (a.num_bits() != b.num_bits()) s << "num_bits " << a.num_bits() << " differs from the group's " << b.num_bits();
  else if (a.is_unsigned() != b.is_unsigned()) s << "unsigned " << a.is_unsigned() << " differs from the group's " << b.is_unsigned();
  else if (a.narrow_range() != b.narrow_range()) s << "narrow_range differs from the group's";
  else if (a.fake_quant() != b.fake_quant()) s << "fake_quant differs from the group's";
  else if (a.learn_amax() != b.learn_amax()) s << "learn_amax differs from the group's";
  else if (a.scale_amax() != b.scale_amax()) s << "scale_amax differs from the group's";
  else if (a.axis() != b.axis()) s << "axis differs from the group's";
  return s.str();
}

// Why share_scales cannot make q's owner use another quantizer ("" when it can).
std::string not_replaceable(torch::nn::Module* owner, const std::string& attr) {
  const auto* mixin = owner ? dynamic_cast<const nn::QuantInputMixin*>(owner) : nullptr;
  const auto* add = owner ? dynamic_cast<const nn::QuantAddImpl*>(owner) : nullptr;
  const bool lstm = owner && dynamic_cast<const nn::QuantLSTMCellImpl*>(owner) != nullptr;
  if (mixin && !lstm && (attr == "_input_quantizer" || attr == "_input0_quantizer")) return "";
  if (add && attr == "_input1_quantizer" && !add->options.share_quantizer()) return "";
  return "held by " + (owner ? owner->name() : std::string("the model")) + " as '" + attr +
         "', which share_scales cannot replace (only torchqat's quantized modules' input quantizers)";
}

void replace(torch::nn::Module& owner, const std::string& attr, const TensorQuantizer& q) {
  if (attr == "_input1_quantizer") {
    dynamic_cast<nn::QuantAddImpl&>(owner).set_input1_quantizer(q);
  } else {
    dynamic_cast<nn::QuantInputMixin&>(owner).set_input_quantizer(q);
  }
}

}  // namespace

const ScaleGroup* SharingReport::group_of(const std::string& quantizer_path) const {
  for (const auto& g : groups) {
    if (std::find(g.members.begin(), g.members.end(), quantizer_path) != g.members.end()) return &g;
  }
  return nullptr;
}

std::string SharingReport::str() const {
  size_t n = 0;
  for (const auto& g : groups) n += g.members.size();
  std::ostringstream s;
  s << "share_scales: " << groups.size() << " groups, " << n << " quantizers"
    << (applied ? "" : " (dry run, nothing changed)");
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    s << "\n  [" << i << "] ";
    for (size_t r = 0; r < g.rules.size(); ++r) s << (r ? "+" : "") << g.rules[r];
    s << ": " << g.major;
    for (const auto& m : g.members) {
      if (m != g.major) s << "\n        = " << m;
    }
  }
  for (const auto& [path, reason] : skipped) s << "\n  skipped " << path << ": " << reason;
  return s.str();
}

SharingReport share_scales(const std::shared_ptr<torch::nn::Module>& module, const onnx::ForwardFunction& forward,
                           const std::vector<at::Tensor>& example_inputs, const ShareScalesOptions& options) {
  TORCH_CHECK_VALUE(module != nullptr, "share_scales: module is null");
  TORCH_CHECK_VALUE(static_cast<bool>(forward), "share_scales: forward is empty");
  TORCH_CHECK_VALUE(!example_inputs.empty(), "share_scales: no example inputs (the rules are found on a traced run)");
  std::set<std::string> rules;
  for (const auto& r : options.rules()) {
    TORCH_CHECK_VALUE(std::find(kRules.begin(), kRules.end(), r) != kRules.end(), "share_scales: unknown rule '", r,
                      "'; choose from 'concat', 'maxpool', 'add' (the residual rule needs forward hooks, which "
                      "LibTorch lacks)");
    rules.insert(r);
  }

  // Which input quantizer is called on which traced tensor, in call order.
  std::unordered_map<const TensorQuantizerImpl*, QuantizerEntry> table;
  for (auto& e : quantizers(*module)) table.emplace(e.quantizer.get(), e);
  std::vector<std::pair<const TensorQuantizerImpl*, size_t>> calls;
  const detail::QuantizerCallObserver observe = [&](const TensorQuantizerImpl& q, const at::Tensor& x) {
    auto it = table.find(&q);
    if (it == table.end() || it->second.role != Role::kInput || !torch::jit::tracer::isTracing()) return;
    calls.emplace_back(&q, torch::jit::tracer::getValueTrace(x)->unique());
  };
  const auto graph = onnx::detail::capture_graph(
      *module,
      [&](const std::vector<at::Tensor>& in) {
        detail::QuantizerCallObserverGuard guard(&observe);
        return forward(in);
      },
      example_inputs);

  // Values by id (the trace's own values; passes after it may have removed some), and which of
  // them are computed from the inputs (constants and parameters are not tensors of the network).
  std::unordered_map<size_t, Value*> by_id;
  std::unordered_set<const Value*> live;
  for (Value* v : graph->inputs()) {
    by_id[v->unique()] = v;
    live.insert(v);
  }
  for (Node* n : graph->nodes()) {
    const bool any_live = std::any_of(n->inputs().begin(), n->inputs().end(), [&](const Value* v) { return live.count(v) > 0; });
    for (Value* v : n->outputs()) {
      by_id[v->unique()] = v;
      if (any_live) live.insert(v);
    }
  }
  std::unordered_map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  // Every name of each quantizer: one already shared is registered under each owner's name.
  std::unordered_map<const TensorQuantizerImpl*, std::vector<std::string>> names_of;
  for (const auto& item : module->named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    modules.emplace(item.key(), item.value());
    if (const auto* q = dynamic_cast<const TensorQuantizerImpl*>(item.value().get())) {
      names_of[q].push_back(item.key());
    }
  }
  const auto owner_attr = [](const std::string& name) {
    const auto dot = name.rfind('.');
    return dot == std::string::npos ? std::make_pair(std::string(), name)
                                    : std::make_pair(name.substr(0, dot), name.substr(dot + 1));
  };
  const auto why_not_replaceable = [&](const TensorQuantizerImpl* q) {
    for (const auto& name : names_of[q]) {
      const auto [owner, attr] = owner_attr(name);
      auto why = not_replaceable(modules.count(owner) ? modules[owner].get() : nullptr, attr);
      if (!why.empty()) return why;
    }
    return std::string();
  };
  const auto name_count = [&](const std::vector<const Site*>& ss) {
    size_t n = 0;
    for (const Site* s : ss) n += names_of[s->quantizer.get()].size();
    return n;
  };
  std::vector<Site> sites;
  for (const auto& [q, id] : calls) {
    auto v = by_id.find(id);
    if (v == by_id.end()) continue;
    const auto& e = table.at(q);
    const auto dot = e.name.rfind('.');
    const std::string owner = dot == std::string::npos ? "" : e.name.substr(0, dot);
    const std::string attr = dot == std::string::npos ? e.name : e.name.substr(dot + 1);
    sites.push_back({e.name, owner, attr, e.quantizer, source(v->second), static_cast<int64_t>(sites.size())});
  }

  UnionFind uf;
  std::map<Value*, std::set<std::string>> domain_rules;  // root -> rules
  const auto join = [&](Value* a, Value* b, const std::string& rule) {
    Value* ra = uf.find(a);
    Value* rb = uf.find(b);
    std::set<std::string> merged;
    for (Value* r : {ra, rb}) {
      auto it = domain_rules.find(r);
      if (it != domain_rules.end()) {
        merged.insert(it->second.begin(), it->second.end());
        domain_rules.erase(it);
      }
    }
    merged.insert(rule);
    domain_rules[uf.unite(a, b)] = std::move(merged);
  };

  struct Pass {
    bool maxpool;
    Value* x;
    Value* y;
  };
  std::vector<Pass> passes;
  for (Node* n : graph->nodes()) {
    const std::string k = kind(n);
    if (kCat.count(k) && rules.count("concat") && n->input(0)->node()->kind() == c10::prim::ListConstruct) {
      for (Value* x : n->input(0)->node()->inputs()) {
        if (live.count(source(x))) join(n->output(), source(x), "concat");
      }
    } else if (kAdd.count(k) && rules.count("add") && n->inputs().size() >= 2 && is_tensor(n->input(0)) &&
               is_tensor(n->input(1)) && live.count(source(n->input(0))) && live.count(source(n->input(1)))) {
      join(source(n->input(0)), source(n->input(1)), "add");
    } else if ((kMaxPool.count(k) || kPass.count(k)) && live.count(source(n->input(0)))) {
      passes.push_back({kMaxPool.count(k) > 0, source(n->input(0)), n->output(0)});
    }
  }

  // A quantizer object already used on several tensors ties their domains.
  std::map<const TensorQuantizerImpl*, std::vector<Value*>> by_quantizer;
  for (const auto& s : sites) by_quantizer[s.quantizer.get()].push_back(s.value);
  for (const auto& [q, values] : by_quantizer) {
    for (size_t i = 1; i < values.size(); ++i) {
      if (uf.find(values[i]) != uf.find(values[0])) join(values[0], values[i], "existing");
    }
  }

  // Through commuting ops, when the far side is quantized.
  for (bool changed = !passes.empty(); changed;) {
    changed = false;
    std::set<Value*> roots;
    for (const auto& s : sites) roots.insert(uf.find(s.value));
    for (const auto& p : passes) {
      if (p.maxpool && !rules.count("maxpool")) continue;
      Value* rx = uf.find(p.x);
      Value* ry = uf.find(p.y);
      if (rx == ry || !roots.count(ry)) continue;
      // A max pooling makes a domain by itself; a reshape / upsample only extends one a rule made.
      if (p.maxpool || domain_rules.count(rx) || domain_rules.count(ry)) {
        join(p.x, p.y, p.maxpool ? "maxpool" : "passthrough");
        changed = true;
      }
    }
  }

  SharingReport report;
  report.applied = !options.dry_run();
  std::map<Value*, std::vector<const Site*>> by_root;
  std::vector<Value*> root_order;
  for (const auto& s : sites) {
    Value* root = uf.find(s.value);
    if (!domain_rules.count(root)) continue;
    if (!by_root.count(root)) root_order.push_back(root);
    by_root[root].push_back(&s);
  }
  for (Value* root : root_order) {
    std::vector<const Site*> uniq;
    std::set<std::string> seen;
    for (const Site* s : by_root[root]) {
      if (seen.insert(s->path).second) uniq.push_back(s);
    }
    std::vector<const Site*> eligible;
    for (const Site* s : uniq) {
      const auto& q = *s->quantizer;
      if (q.disabled()) {
        report.skipped.emplace_back(s->path, "quantizer disabled (kept float)");
      } else if (q.desc().axis()) {
        report.skipped.emplace_back(s->path, "per-channel input quantizer");
      } else if (auto why = why_not_replaceable(s->quantizer.get()); !why.empty()) {
        report.skipped.emplace_back(s->path, why);
      } else {
        eligible.push_back(s);
      }
    }
    if (name_count(eligible) < 2) continue;
    std::map<Signature, int64_t> counts;
    for (const Site* s : eligible) ++counts[signature(*s->quantizer)];
    const Site* major = *std::max_element(eligible.begin(), eligible.end(), [&](const Site* a, const Site* b) {
      return std::make_tuple(counts[signature(*a->quantizer)], a->quantizer->num_bits(), -a->order) <
             std::make_tuple(counts[signature(*b->quantizer)], b->quantizer->num_bits(), -b->order);
    });
    std::vector<const Site*> kept;
    for (const Site* s : eligible) {
      if (s == major) {
        kept.push_back(s);
        continue;
      }
      const std::string reason = differs(*s->quantizer, *major->quantizer);
      if (reason.empty()) kept.push_back(s);
      else report.skipped.emplace_back(s->path, reason);
    }
    if (name_count(kept) < 2) continue;
    ScaleGroup g;
    g.major = major->path;
    for (const Site* s : kept) {
      for (const auto& name : names_of[s->quantizer.get()]) g.members.push_back(name);
    }
    for (const auto& label : kLabels) {
      if (domain_rules[root].count(label)) g.rules.push_back(label);
    }
    g.quantizer = major->quantizer;
    if (!options.dry_run()) {
      std::vector<at::Tensor> amaxes;
      for (const Site* s : kept) {
        if (s->quantizer->has_amax()) amaxes.push_back(s->quantizer->amax());
      }
      const bool scalar = std::all_of(amaxes.begin(), amaxes.end(), [](const at::Tensor& a) { return a.numel() == 1; });
      if (!amaxes.empty() && scalar) {
        std::vector<at::Tensor> flat;
        for (const auto& a : amaxes) flat.push_back(a.detach().to(at::kFloat).cpu().reshape({}));
        const at::Tensor merged = at::stack(flat).max();
        const auto& m = major->quantizer.ptr();
        m->set_amax(m->has_amax() ? merged.reshape(m->amax().sizes()) : merged);
      }
      for (const Site* s : kept) {
        if (s->quantizer.get() == major->quantizer.get()) continue;
        for (const auto& name : names_of[s->quantizer.get()]) {
          const auto [owner, attr] = owner_attr(name);
          replace(*modules.at(owner), attr, major->quantizer);
        }
      }
    }
    report.groups.push_back(std::move(g));
  }
  std::sort(report.groups.begin(), report.groups.end(),
            [](const ScaleGroup& a, const ScaleGroup& b) { return a.major < b.major; });
  return report;
}

}  // namespace torchqat
