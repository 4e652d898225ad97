// replace_with_quant_modules: plan every replacement, check it, then change the tree, so that an
// error leaves the model as it was.
#include "torchqat/nn/replace.h"

#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include <sstream>
#include <unordered_map>

#include "nn/name_pattern.h"
#include "nn/quant_module_map.h"

namespace torchqat::nn {
namespace {

using torch::nn::Module;
using detail::NamePattern;

// One registration of a layer to replace: parent->children_[key], full name `name`. The layer is
// kept as a raw pointer so that the plan itself holds no reference to it (see held_elsewhere).
struct Site {
  std::shared_ptr<Module> parent;
  std::string key;
  std::string name;
  Module* layer;
  const detail::QuantModuleEntry* entry;
};

struct Patterns {
  std::vector<NamePattern> include, exclude, rules;
  explicit Patterns(const ReplaceOptions& o) {
    for (const auto& p : o.include()) include.emplace_back(p);
    for (const auto& p : o.exclude()) exclude.emplace_back(p);
    for (const auto& r : o.rules()) rules.emplace_back(r.pattern());
  }
  static bool any(const std::vector<NamePattern>& ps, const std::string& name) {
    for (const auto& p : ps) {
      if (p.matches(name)) return true;
    }
    return false;
  }
  bool selected(const std::string& name) const {
    return (include.empty() || any(include, name)) && !any(exclude, name);
  }
};

void collect(const std::shared_ptr<Module>& parent, const std::string& prefix, const ReplaceOptions& opts,
             const Patterns& patterns, std::vector<Site>& sites) {
  for (const auto& item : parent->named_children()) {
    const std::string name = prefix.empty() ? item.key() : prefix + "." + item.key();
    const auto* entry = detail::find_quant_module_entry(*item.value());
    if (entry) {  // a float layer: a leaf
      if ((!entry->is_max_pool || opts.max_pool()) && patterns.selected(name)) {
        sites.push_back({parent, item.key(), name, item.value().get(), entry});
      }
      continue;
    }
    collect(item.value(), name, opts, patterns, sites);
  }
}

bool is_container(const Module& m) {
  return dynamic_cast<const torch::nn::SequentialImpl*>(&m) || dynamic_cast<const torch::nn::ModuleListImpl*>(&m) ||
         dynamic_cast<const torch::nn::ModuleDictImpl*>(&m);
}

// Layers registered in a custom module that have more owners than the tree accounts for: each
// registration (children_, plus the container's own list for Sequential / ModuleList /
// ModuleDict). The extra owner is almost always a member holder the custom module's forward
// calls, which would keep running the float layer. Layers only in containers are not checked:
// those call their stored entries, which put() updates, so an outside handle cannot bypass it.
std::vector<std::string> held_elsewhere(const std::vector<Site>& sites) {
  std::unordered_map<Module*, long> expected;
  std::unordered_map<Module*, bool> in_custom;
  for (const auto& s : sites) {
    const bool container = is_container(*s.parent);
    expected[s.layer] += container ? 2 : 1;
    in_custom[s.layer] = in_custom[s.layer] || !container;
  }
  std::vector<std::string> names;
  for (const auto& s : sites) {
    auto it = expected.find(s.layer);
    if (it == expected.end()) continue;  // a layer registered twice is reported once
    if (in_custom[s.layer] && s.layer->weak_from_this().use_count() > it->second) names.push_back(s.name);
    expected.erase(it);
  }
  return names;
}

// The descriptors for one layer: options', then the last matching rule's.
std::pair<std::optional<QuantDescriptor>, std::optional<QuantDescriptor>> descriptors_for(
    const std::string& name, const ReplaceOptions& opts, const Patterns& patterns) {
  auto in = opts.quant_desc_input();
  auto w = opts.quant_desc_weight();
  for (size_t i = 0; i < opts.rules().size(); ++i) {
    if (!patterns.rules[i].matches(name)) continue;
    if (opts.rules()[i].quant_desc_input()) in = opts.rules()[i].quant_desc_input();
    if (opts.rules()[i].quant_desc_weight()) w = opts.rules()[i].quant_desc_weight();
  }
  return {in, w};
}

void put(const Site& s, const detail::QuantReplacement& r) {
  if (auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(s.parent.get())) {
    // Sequential::forward calls its AnyModule list, not children_.
    for (auto& any : *seq) {
      if (any.ptr().get() == s.layer) any = r.any;
    }
    s.parent->replace_module(s.key, r.module);
  } else if (auto* list = dynamic_cast<torch::nn::ModuleListImpl*>(s.parent.get())) {
    for (auto& m : *list) {
      if (m.get() == s.layer) m = r.module;
    }
    s.parent->replace_module(s.key, r.module);
  } else if (auto* dict = dynamic_cast<torch::nn::ModuleDictImpl*>(s.parent.get())) {
    dict->update(std::vector<std::pair<std::string, std::shared_ptr<Module>>>{{s.key, r.module}});
  } else {
    s.parent->replace_module(s.key, r.module);
  }
}

void warn_unmatched(const std::shared_ptr<Module>& root, const ReplaceOptions& opts, const Patterns& patterns) {
  std::vector<std::string> names;
  for (const auto& item : root->named_modules(/*name_prefix=*/"", /*include_self=*/false)) names.push_back(item.key());
  auto check = [&](const std::vector<NamePattern>& ps, const char* what) {
    for (const auto& p : ps) {
      bool hit = false;
      for (const auto& n : names) {
        if (p.matches(n)) {
          hit = true;
          break;
        }
      }
      if (!hit) TORCH_WARN("replace_with_quant_modules: ", what, " pattern '", p.glob(), "' matches no module name");
    }
  };
  check(patterns.include, "include");
  check(patterns.exclude, "exclude");
  check(patterns.rules, "rule");
}

}  // namespace

std::vector<std::string> replace_with_quant_modules(const std::shared_ptr<Module>& root, const ReplaceOptions& opts) {
  TORCH_CHECK_VALUE(root != nullptr, "replace_with_quant_modules: root is null");
  const Patterns patterns(opts);
  warn_unmatched(root, opts, patterns);

  std::vector<Site> sites;
  collect(root, "", opts, patterns, sites);

  const auto held = held_elsewhere(sites);
  if (!held.empty()) {
    std::ostringstream list;
    for (size_t i = 0; i < held.size(); ++i) list << (i ? ", " : "") << "'" << held[i] << "'";
    TORCH_CHECK_VALUE(false, "replace_with_quant_modules: ", list.str(),
                      " also held outside the module tree (e.g. a torch::nn::Conv2d member of a custom module): its "
                      "forward would keep calling the float layer. Build that module with the torchqat::nn quantized "
                      "classes, keep such layers in a Sequential / ModuleList / ModuleDict, release the other handles, "
                      "or exclude these names. Nothing was replaced.");
  }

  // Build every quantized layer before touching the tree: a bad descriptor fails here. A layer
  // registered under several names gets one quantized module, so it stays shared.
  std::unordered_map<Module*, detail::QuantReplacement> built;
  for (const auto& s : sites) {
    if (built.count(s.layer)) continue;
    const auto [in, w] = descriptors_for(s.name, opts, patterns);
    try {
      built.emplace(s.layer, s.entry->make(s.layer->shared_from_this(), in, w));
    } catch (const c10::ValueError& e) {
      TORCH_CHECK_VALUE(false, "replace_with_quant_modules: cannot quantize '", s.name, "': ", e.what_without_backtrace(),
                        ". Nothing was replaced.");
    }
  }

  std::vector<std::string> names;
  for (const auto& s : sites) {
    put(s, built.at(s.layer));
    names.push_back(s.name);
  }
  return names;
}

}  // namespace torchqat::nn
