// tools::FeatureDistillationLoss: the loss equals the per-layer MSE computed by hand from the
// layers' outputs, its gradient reaches the student only, the Sequential entries come back on
// remove(), and a float student gives 0.
#include "catch_torch.h"

#include "onnx_test_model.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/quantizers.h"
#include "torchqat/tools/distill.h"

namespace tqnn = torchqat::nn;
using torchqat::tools::FeatureDistillationLoss;

namespace {

// A calibrated TinyResNet and a float teacher with the same weights, both in eval mode.
std::pair<torchqat_test::TinyResNet, torchqat_test::TinyResNet> student_and_teacher() {
  torch::manual_seed(0);
  torchqat_test::TinyResNet student;
  torchqat_test::randomize_batch_norms(*student);
  std::vector<at::Tensor> batches;
  for (int i = 0; i < 2; ++i) batches.push_back(torch::randn({4, 3, 8, 8}));
  torchqat_test::calibrate(student, batches);
  torchqat_test::TinyResNet teacher;
  {
    torch::NoGradGuard no_grad;
    auto tp = teacher->named_parameters();
    for (const auto& p : student->named_parameters()) tp[p.key()].copy_(p.value());
    auto tb = teacher->named_buffers();
    for (const auto& b : student->named_buffers()) {
      if (tb.contains(b.key())) tb[b.key()].copy_(b.value());
    }
  }
  torchqat::set_mode(*teacher, torchqat::Mode::kDisabled);
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  student->eval();
  teacher->eval();
  return {student, teacher};
}

// The outputs of stem, branch.2, add and fc, computed by calling the layers one by one.
std::vector<at::Tensor> layer_outputs(torchqat_test::TinyResNetImpl& m, const at::Tensor& input) {
  const at::Tensor x = m.stem->forward(input);
  const at::Tensor b = m.branch->forward(x);
  const at::Tensor y = m.add(x, b);
  return {x, b, y, m.forward(input)};
}

}  // namespace

TEST_CASE("FeatureDistillationLoss is the sum of the layers' MSE computed by hand", "[tools][distill]") {
  auto [student, teacher] = student_and_teacher();
  const auto x = torch::randn({2, 3, 8, 8});
  at::Tensor ref_sum;
  {
    torch::NoGradGuard no_grad;
    const auto s = layer_outputs(*student, x);
    const auto t = layer_outputs(*teacher, x);
    std::vector<at::Tensor> per_layer;
    for (size_t i = 0; i < s.size(); ++i) per_layer.push_back((s[i] - t[i]).pow(2).mean());
    ref_sum = at::stack(per_layer).sum();
  }
  REQUIRE(ref_sum.item<double>() > 0);

  FeatureDistillationLoss loss_fn(student, teacher, {"stem", "branch.2", "add", "fc"});
  REQUIRE(loss_fn.layers() == std::vector<std::string>{"stem", "branch.2", "add", "fc"});
  const at::Tensor loss = loss_fn(x);
  CHECK(torch::allclose(loss.detach(), ref_sum, 1e-6, 0));
  REQUIRE(loss_fn.student_output().size() == 1);
  CHECK(loss_fn.student_output()[0].sizes() == at::IntArrayRef({2, 10}));

  // The gradient flows into the student only.
  REQUIRE(loss.requires_grad());
  loss.backward();
  const auto& g = student->stem[0]->as<tqnn::QuantConv2dImpl>()->weight.grad();
  REQUIRE(g.defined());
  CHECK(g.abs().sum().item<double>() > 0);
  CHECK(student->fc->weight.grad().defined());
  for (const auto& p : teacher->parameters()) CHECK_FALSE(p.grad().defined());

  // Running the models yourself and compute() give the same value; "mean" divides by the layers.
  student->forward(x);
  {
    torch::NoGradGuard no_grad;
    teacher->forward(x);
  }
  CHECK(torch::allclose(loss_fn.compute(), loss.detach(), 1e-6, 0));
  FeatureDistillationLoss mean_fn(student, teacher, {"stem", "branch.2", "add", "fc"}, "mean");
  CHECK(torch::allclose(mean_fn(x).detach(), ref_sum / 4, 1e-6, 0));
}

TEST_CASE("FeatureDistillationLoss patterns follow fnmatch and the hooks come off", "[tools][distill]") {
  auto [student, teacher] = student_and_teacher();
  {
    FeatureDistillationLoss loss_fn(student, teacher, {"branch.*", "cat"});
    // `*` crosses dots, as in Python: the conv's quantizers are layers too.
    CHECK(loss_fn.layers() == std::vector<std::string>{"branch.0", "branch.0._input_quantizer",
                                                       "branch.0._weight_quantizer", "branch.1", "branch.2", "cat"});
    // While hooked, the Sequential's entry is the wrapper; the registered child is not.
    CHECK(student->branch->ptr(1)->as<torch::nn::BatchNorm2dImpl>() == nullptr);
    CHECK(student->branch->named_children()[1].value()->as<torch::nn::BatchNorm2dImpl>() != nullptr);
    CHECK(loss_fn(torch::randn({2, 3, 8, 8})).item<double>() > 0);
    loss_fn.remove();
    CHECK_FALSE(loss_fn.active());
    CHECK(student->branch->ptr(1)->as<torch::nn::BatchNorm2dImpl>() != nullptr);
    CHECK_THROWS_WITH(loss_fn.compute(), Catch::Contains("the hooks were removed"));
  }
  // The destructor removes them too, and the model runs as before.
  {
    FeatureDistillationLoss loss_fn(student, teacher, {"stem.1"});
  }
  CHECK(student->stem->ptr(1)->as<torch::nn::BatchNorm2dImpl>() != nullptr);
  CHECK(student->forward(torch::randn({1, 3, 8, 8})).sizes() == at::IntArrayRef({1, 10}));
}

TEST_CASE("FeatureDistillationLoss with a float copy: 0 with quantization off, > 0 with it on", "[tools][distill]") {
  torch::manual_seed(1);
  torch::nn::Sequential model(tqnn::QuantLinear(8, 16), torch::nn::ReLU(), tqnn::QuantLinear(16, 4));
  for (size_t i : {0, 2}) {
    auto l = model[i]->as<tqnn::QuantLinearImpl>();
    l->input_quantizer()->set_amax(torch::tensor(0.5f));
    l->weight_quantizer()->set_amax(l->weight.detach().abs().amax({1}, true));
  }
  FeatureDistillationLoss loss_fn(model, {"0", "2"});
  REQUIRE(loss_fn.teacher() != nullptr);
  for (const auto& e : torchqat::quantizers(*loss_fn.teacher())) CHECK(e.quantizer->disabled());
  CHECK_FALSE(loss_fn.teacher()->is_training());
  const auto x = torch::randn({16, 8});
  {
    auto off = torchqat::disable_quantization(*model);
    CHECK(loss_fn(x).item<double>() == 0.0);
  }
  CHECK(loss_fn(x).item<double>() > 0.0);
}

TEST_CASE("feature_distillation_loss sums each tensor of a layer", "[tools][distill]") {
  const auto a = torch::ones({2, 3}), b = torch::zeros({2, 3}), c = torch::full({4}, 2.0), d = torch::zeros({4});
  const auto l = torchqat::tools::feature_distillation_loss({"x", "y"}, {{a, c}, {a}}, {{b, d}, {a}});
  CHECK(l.item<double>() == 1.0 + 4.0 + 0.0);
  CHECK_THROWS_WITH(torchqat::tools::feature_distillation_loss({"x"}, {{a}}, {{c}}),
                    Catch::Contains("layer 'x' outputs differ in shape: student [[2, 3]], teacher [[4]]"));
}
