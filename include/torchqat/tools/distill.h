#pragma once
// Label-free feature distillation for QAT, the C++ counterpart of
// torchqat.tools.FeatureDistillationLoss: per-layer MSE between the quantized model (student) and
// a float copy (teacher), the loss of NVIDIA's YOLOv7 QAT recipe.
//
//   torchqat::tools::FeatureDistillationLoss distill(model, {"backbone.*", "neck"});   // teacher: a float copy
//   for (auto& x : batches) {
//     at::Tensor loss = distill(x);        // runs the student, then the teacher under no_grad
//     optimizer.zero_grad(); loss.backward(); optimizer.step();
//   }
//   distill.remove();                      // hooks off (also when distill is destroyed)
//
// or, running the models yourself: `model->forward(x); teacher->forward(x); loss = distill.compute();`.
//
// loss = sum over layers (reduction "sum", as NVIDIA does; "mean": divided by the layer count) of
// the layer's MSE (mean over elements, in float32; each tensor of a layer returning several).
//
// Layers are module names or fnmatch patterns (`*` crosses dots) matched against the student's
// module names; each must exist in the teacher under the same name. LibTorch has no forward
// hooks, so a layer's output can be caught only when it is one of torchqat's quantized modules
// (QuantConv*, QuantConvTranspose*, QuantLinear, QuantAdd, QuantConcat, the poolings, QuantLSTM,
// QuantLSTMCell, TensorQuantizer), an item of a torch::nn::Sequential taking and returning one tensor, or a
// Sequential (its last item's output); any other matched layer is an error that names it. While
// the loss is active a hooked Sequential item's entry is a wrapper: Sequential::ptr(i) / at<T>(i)
// return the wrapper until remove() (named_children(), state dicts and torch::save are unchanged).
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "torchqat/onnx/export.h"

namespace torchqat::tools {

// sum (or "mean": / layers.size()) of MSE(student[i][j], teacher[i][j]) over layers i and their
// tensors j, in float32 on the student tensor's device; the rule Python's loss calls too.
// c10::Error when a layer's outputs differ in count or shape (naming the layer).
at::Tensor feature_distillation_loss(const std::vector<std::string>& layers,
                                     const std::vector<std::vector<at::Tensor>>& student,
                                     const std::vector<std::vector<at::Tensor>>& teacher,
                                     const std::string& reduction = "sum");

// The teacher Python makes with teacher=None: a deep copy (module.clone(), so a
// torch::nn::Cloneable module) with every quantizer disabled, in eval mode, without gradients.
std::shared_ptr<torch::nn::Module> float_copy(const torch::nn::Module& module);

class FeatureDistillationLoss {
 public:
  using Forward = onnx::ForwardFunction;

  // student / teacher: different module objects; their forwards (student_forward, teacher_forward)
  // are only needed by operator()(inputs). Errors (c10::ValueError): a null model, teacher ==
  // student, reduction not "sum" / "mean", no layers, no student module matched, a matched layer
  // missing from the teacher or not observable (see above). A pattern matching nothing warns.
  FeatureDistillationLoss(std::shared_ptr<torch::nn::Module> student, std::shared_ptr<torch::nn::Module> teacher,
                          const std::vector<std::string>& layers, std::string reduction = "sum",
                          Forward student_forward = {}, Forward teacher_forward = {});

  // For module holders whose forward takes 1 to 4 tensors; without a teacher, float_copy(student).
  template <typename S>
  FeatureDistillationLoss(const torch::nn::ModuleHolder<S>& student, const std::vector<std::string>& layers,
                          std::string reduction = "sum")
      : FeatureDistillationLoss(student, torch::nn::ModuleHolder<S>(std::dynamic_pointer_cast<S>(float_copy(*student))),
                                layers, std::move(reduction)) {}
  template <typename S, typename T>
  FeatureDistillationLoss(const torch::nn::ModuleHolder<S>& student, const torch::nn::ModuleHolder<T>& teacher,
                          const std::vector<std::string>& layers, std::string reduction = "sum")
      : FeatureDistillationLoss(student.ptr(), teacher.ptr(), layers, std::move(reduction), forward_of(student.ptr()),
                                forward_of(teacher.ptr())) {}

  FeatureDistillationLoss(FeatureDistillationLoss&&);
  FeatureDistillationLoss& operator=(FeatureDistillationLoss&&);
  ~FeatureDistillationLoss();

  // Runs the student on inputs (its output: student_output()), the teacher under no_grad, then compute().
  at::Tensor operator()(const std::vector<at::Tensor>& inputs);
  at::Tensor operator()(const at::Tensor& input) { return (*this)(std::vector<at::Tensor>{input}); }
  // The loss from the outputs the last student and teacher forwards left; clears them. c10::Error
  // when a layer has no output from one of them, or after remove().
  at::Tensor compute();
  // Drops the recorded outputs (call after each backward when running the models yourself).
  void clear();
  // Removes every hook; compute() is an error afterwards.
  void remove();

  // The supervised layers, in the student's module order.
  const std::vector<std::string>& layers() const { return layers_; }
  const std::string& reduction() const { return reduction_; }
  const std::shared_ptr<torch::nn::Module>& student() const { return student_; }
  const std::shared_ptr<torch::nn::Module>& teacher() const { return teacher_; }
  const std::vector<at::Tensor>& student_output() const { return student_output_; }
  bool active() const { return !hooks_.empty(); }

 private:
  template <typename M>
  static Forward forward_of(std::shared_ptr<M> m) {
    return [m](const std::vector<at::Tensor>& in) { return onnx::detail::forward_n(*m, in); };
  }

  struct Hooks;
  std::shared_ptr<torch::nn::Module> student_, teacher_;
  std::string reduction_;
  Forward student_forward_, teacher_forward_;
  std::vector<std::string> layers_;
  // Written by the hooks: layer name -> its last output (the teacher's detached).
  std::shared_ptr<std::unordered_map<std::string, std::vector<at::Tensor>>> student_feats_, teacher_feats_;
  std::vector<std::shared_ptr<Hooks>> hooks_;
  std::vector<at::Tensor> student_output_;
};

}  // namespace torchqat::tools
