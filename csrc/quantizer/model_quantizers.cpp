// quantizers(), set_mode() and the state guards over a module tree.
#include "torchqat/quantizers.h"

#include <unordered_set>

#include "torchqat/nn/quant_lstm.h"
#include "torchqat/nn/quant_mixin.h"

namespace torchqat {

const char* to_string(Role role) { return role == Role::kWeight ? "weight" : "input"; }

const char* to_string(Mode mode) {
  switch (mode) {
    case Mode::kQuant: return "quant";
    case Mode::kCalib: return "calib";
    case Mode::kDisabled: return "disabled";
  }
  return "unknown";
}

namespace {

// The weight quantizers the layers under module declare as theirs.
std::unordered_set<const TensorQuantizerImpl*> weight_quantizers(torch::nn::Module& module) {
  std::unordered_set<const TensorQuantizerImpl*> out;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (const auto* mixin = dynamic_cast<const nn::QuantMixin*>(m.get())) {
      if (auto q = mixin->weight_quantizer()) out.insert(q.get());
    } else if (const auto* lstm = dynamic_cast<const nn::QuantLSTMImpl*>(m.get())) {
      for (int64_t l = 0; l < lstm->num_quantizer_pairs(); ++l) out.insert(lstm->weight_quantizer(l).get());
    }
  }
  return out;
}

}  // namespace

std::vector<QuantizerEntry> quantizers(torch::nn::Module& module) {
  const auto weights = weight_quantizers(module);
  std::unordered_set<const TensorQuantizerImpl*> seen;
  std::vector<QuantizerEntry> out;
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    auto q = std::dynamic_pointer_cast<TensorQuantizerImpl>(item.value());
    if (!q || !seen.insert(q.get()).second) continue;
    out.push_back({item.key(), TensorQuantizer(q), weights.count(q.get()) ? Role::kWeight : Role::kInput});
  }
  return out;
}

void set_mode(torch::nn::Module& module, Mode mode, std::optional<Role> role) {
  for (auto& e : quantizers(module)) {
    if (role && e.role != *role) continue;
    auto& q = *e.quantizer;
    switch (mode) {
      case Mode::kQuant:
        q.enable();
        q.disable_calib();
        q.enable_quant();
        break;
      case Mode::kCalib:
        q.enable();
        q.enable_calib();
        q.disable_quant();
        break;
      case Mode::kDisabled:
        q.disable();
        break;
    }
  }
}

QuantStateGuard::QuantStateGuard(torch::nn::Module& module) {
  for (auto& e : quantizers(module)) {
    const auto& q = *e.quantizer;
    saved_.push_back({e.quantizer, q.disabled(), q.quant_enabled(), q.calib_enabled()});
  }
}

QuantStateGuard::QuantStateGuard(QuantStateGuard&& other) noexcept : saved_(std::move(other.saved_)) {
  other.saved_.clear();
}

QuantStateGuard::~QuantStateGuard() { restore(); }

void QuantStateGuard::restore() {
  for (auto& s : saved_) {
    auto& q = *s.quantizer;
    s.disabled ? q.disable() : q.enable();
    s.quant ? q.enable_quant() : q.disable_quant();
    // calib was on only with a calibrator, so enable_calib() finds it again.
    s.calib ? q.enable_calib() : q.disable_calib();
  }
  saved_.clear();
}

QuantStateGuard disable_quantization(torch::nn::Module& module) {
  QuantStateGuard guard(module);
  for (auto& e : quantizers(module)) e.quantizer->disable();
  return guard;
}

QuantStateGuard enable_quantization(torch::nn::Module& module) {
  QuantStateGuard guard(module);
  for (auto& e : quantizers(module)) e.quantizer->enable();
  return guard;
}

}  // namespace torchqat
