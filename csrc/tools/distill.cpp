// FeatureDistillationLoss: output hooks (nn/output_hooks.h) on the chosen layers of the student and
// the teacher, and the loss over what they caught.
#include "torchqat/tools/distill.h"

#include <c10/util/Exception.h>
#include <ATen/core/grad_mode.h>

#include <regex>
#include <sstream>
#include <unordered_set>

#include "nn/name_pattern.h"
#include "nn/output_hooks.h"
#include "torchqat/quantizers.h"

namespace torchqat::tools {
namespace {

constexpr const char* kWhat = "FeatureDistillationLoss";

std::string shapes(const std::vector<at::Tensor>& ts) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < ts.size(); ++i) s << (i ? ", " : "") << ts[i].sizes();
  s << "]";
  return s.str();
}

}  // namespace

struct FeatureDistillationLoss::Hooks {
  std::vector<nn::detail::OutputHookHandle> handles;
};

at::Tensor feature_distillation_loss(const std::vector<std::string>& layers,
                                     const std::vector<std::vector<at::Tensor>>& student,
                                     const std::vector<std::vector<at::Tensor>>& teacher, const std::string& reduction) {
  TORCH_CHECK_VALUE(reduction == "sum" || reduction == "mean", kWhat, ": reduction must be 'sum' or 'mean', got '",
                    reduction, "'");
  TORCH_CHECK_VALUE(!layers.empty() && layers.size() == student.size() && layers.size() == teacher.size(), kWhat,
                    ": one student and one teacher output list per layer are needed (", layers.size(), " layers, ",
                    student.size(), " student, ", teacher.size(), " teacher lists)");
  std::vector<at::Tensor> losses;
  losses.reserve(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& s = student[i];
    const auto& t = teacher[i];
    TORCH_CHECK(!s.empty() || !t.empty(), kWhat, ": layer '", layers[i], "' returned no tensor");
    bool same = s.size() == t.size();
    for (size_t j = 0; same && j < s.size(); ++j) same = s[j].sizes() == t[j].sizes();
    TORCH_CHECK(same, kWhat, ": layer '", layers[i], "' outputs differ in shape: student ", shapes(s), ", teacher ",
                shapes(t));
    at::Tensor layer_loss;
    for (size_t j = 0; j < s.size(); ++j) {
      at::Tensor l = at::mse_loss(s[j].to(at::kFloat), t[j].to(at::kFloat).to(s[j].device()));
      layer_loss = j == 0 ? l : layer_loss + l;
    }
    losses.push_back(layer_loss);
  }
  at::Tensor total = at::stack(losses).sum();
  return reduction == "mean" ? total / static_cast<double>(losses.size()) : total;
}

std::shared_ptr<torch::nn::Module> float_copy(const torch::nn::Module& module) {
  std::shared_ptr<torch::nn::Module> copy;
  try {
    copy = module.clone();
  } catch (const c10::Error&) {
    TORCH_CHECK_VALUE(false, kWhat, ": cannot make the float teacher: ", module.name(),
                      " cannot be copied (clone() needs a torch::nn::Cloneable module); pass a teacher");
  }
  set_mode(*copy, Mode::kDisabled);
  copy->eval();
  for (auto& p : copy->parameters()) p.requires_grad_(false);
  return copy;
}

FeatureDistillationLoss::FeatureDistillationLoss(std::shared_ptr<torch::nn::Module> student,
                                                 std::shared_ptr<torch::nn::Module> teacher,
                                                 const std::vector<std::string>& layers, std::string reduction,
                                                 Forward student_forward, Forward teacher_forward)
    : student_(std::move(student)),
      teacher_(std::move(teacher)),
      reduction_(std::move(reduction)),
      student_forward_(std::move(student_forward)),
      teacher_forward_(std::move(teacher_forward)),
      student_feats_(std::make_shared<std::unordered_map<std::string, std::vector<at::Tensor>>>()),
      teacher_feats_(std::make_shared<std::unordered_map<std::string, std::vector<at::Tensor>>>()) {
  TORCH_CHECK_VALUE(student_ != nullptr && teacher_ != nullptr, kWhat, ": student and teacher must not be null");
  TORCH_CHECK_VALUE(student_ != teacher_, kWhat,
                    ": teacher must be a different module object from student (float_copy(student) makes one)");
  TORCH_CHECK_VALUE(reduction_ == "sum" || reduction_ == "mean", kWhat, ": reduction must be 'sum' or 'mean', got '",
                    reduction_, "'");
  TORCH_CHECK_VALUE(!layers.empty(), kWhat, ": give the layers to supervise (names or patterns)");
  std::vector<std::string> names;
  for (const auto& item : student_->named_modules(/*name_prefix=*/"", /*include_self=*/false)) names.push_back(item.key());
  std::unordered_set<std::string> chosen;
  for (const auto& pattern : layers) {
    const std::regex re(nn::detail::glob_to_regex(pattern));
    bool hit = false;
    for (const auto& n : names) {
      if (std::regex_match(n, re)) {
        hit = true;
        chosen.insert(n);
      }
    }
    if (!hit) TORCH_WARN(kWhat, ": layer pattern '", pattern, "' matched no module");
  }
  TORCH_CHECK_VALUE(!chosen.empty(), kWhat, ": layers matched no module of the student");
  std::unordered_set<std::string> teacher_names;
  for (const auto& item : teacher_->named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    teacher_names.insert(item.key());
  }
  for (const auto& n : names) {
    if (!chosen.count(n)) continue;
    TORCH_CHECK_VALUE(teacher_names.count(n), kWhat, ": the teacher has no module named '", n, "'");
    layers_.push_back(n);  // model order
  }
  auto hooks = std::make_shared<Hooks>();
  for (const auto& n : layers_) {
    auto s_store = student_feats_;
    auto t_store = teacher_feats_;
    try {
      hooks->handles.push_back(nn::detail::add_output_hook(
          student_, n, [s_store, n](const std::vector<at::Tensor>& out) { (*s_store)[n] = out; }));
      hooks->handles.push_back(nn::detail::add_output_hook(teacher_, n, [t_store, n](const std::vector<at::Tensor>& out) {
        std::vector<at::Tensor> detached;
        detached.reserve(out.size());
        for (const auto& t : out) detached.push_back(t.detach());
        (*t_store)[n] = std::move(detached);
      }));
    } catch (const c10::ValueError& e) {
      TORCH_CHECK_VALUE(false, kWhat, ": layer '", n, "': ", e.what_without_backtrace());
    }
  }
  hooks_.push_back(std::move(hooks));
}

FeatureDistillationLoss::FeatureDistillationLoss(FeatureDistillationLoss&&) = default;
FeatureDistillationLoss& FeatureDistillationLoss::operator=(FeatureDistillationLoss&&) = default;
FeatureDistillationLoss::~FeatureDistillationLoss() = default;

at::Tensor FeatureDistillationLoss::operator()(const std::vector<at::Tensor>& inputs) {
  TORCH_CHECK_VALUE(student_forward_ && teacher_forward_, kWhat,
                    ": made without forward functions: run both models yourself, then call compute()");
  TORCH_CHECK(active(), kWhat, ": the hooks were removed; make a new loss");
  clear();
  student_output_ = student_forward_(inputs);
  {
    at::NoGradGuard no_grad;
    teacher_forward_(inputs);
  }
  return compute();
}

at::Tensor FeatureDistillationLoss::compute() {
  TORCH_CHECK(active(), kWhat, ": the hooks were removed; make a new loss");
  std::vector<std::vector<at::Tensor>> s, t;
  for (const auto& n : layers_) {
    auto si = student_feats_->find(n);
    auto ti = teacher_feats_->find(n);
    TORCH_CHECK(si != student_feats_->end() && ti != teacher_feats_->end(), kWhat, ": no ",
                si == student_feats_->end() ? "student" : "teacher", " output for layer '", n,
                "': run both models on the same inputs first (or call the loss with the inputs)");
    s.push_back(si->second);
    t.push_back(ti->second);
  }
  clear();
  return feature_distillation_loss(layers_, s, t, reduction_);
}

void FeatureDistillationLoss::clear() {
  if (student_feats_) student_feats_->clear();
  if (teacher_feats_) teacher_feats_->clear();
}

void FeatureDistillationLoss::remove() {
  hooks_.clear();
  clear();
}

}  // namespace torchqat::tools
