// share_scales on a YOLOv7-like block (yolo_block.h): the concat, MaxPool-branch and residual-add
// groups, one quantizer object per group afterwards (the largest amax kept), a dry run that
// changes nothing, and quantizers it must leave alone.
#include "catch_torch.h"

#include "torchqat/quantizers.h"
#include "torchqat/share_scales.h"
#include "yolo_block.h"

namespace {

using Members = std::vector<std::string>;

const Members kConcat = {"cv3.0._input_quantizer", "out.0._input_quantizer"};
const Members kMaxPool = {"pool._input_quantizer", "mp1.0._input_quantizer", "mp2.0._input_quantizer"};
const Members kResidual = {"cat._input_quantizer", "res.0._input_quantizer", "add._input0_quantizer",
                           "add._input1_quantizer"};

torchqat::TensorQuantizer input_quantizer_of(torch::nn::Sequential& s) {
  return s[0]->as<torchqat::nn::QuantConv2dImpl>()->input_quantizer();
}

const torchqat::TensorQuantizerImpl* quantizer_at(torch::nn::Module& m, const std::string& path) {
  for (const auto& item : m.named_modules()) {
    if (item.key() == path) return dynamic_cast<const torchqat::TensorQuantizerImpl*>(item.value().get());
  }
  return nullptr;
}

}  // namespace

TEST_CASE("share_scales finds the concat, MaxPool and residual-add groups of a YOLO-like block", "[share_scales]") {
  torch::manual_seed(0);
  torchqat_test::YoloBlock model;
  const auto x = torch::randn({2, 3, 16, 16});
  const auto before = model->forward(x).detach();
  const size_t quantizer_count = torchqat::quantizers(*model).size();

  const auto dry = torchqat::share_scales(model, {x}, torchqat::ShareScalesOptions().dry_run(true));
  CHECK_FALSE(dry.applied);
  REQUIRE(dry.groups.size() == 3);
  CHECK(torchqat::quantizers(*model).size() == quantizer_count);  // nothing changed

  // Distinct amax on the residual group, to see the largest kept.
  model->cat->input_quantizer()->set_amax(torch::tensor(1.0f));
  model->add->input1_quantizer()->set_amax(torch::tensor(3.0f));
  const auto report = torchqat::share_scales(model, {x});
  INFO(report.str());
  REQUIRE(report.groups.size() == 3);
  // Sorted by major: "cat._input_quantizer", "cv3.0._input_quantizer", "pool._input_quantizer".
  CHECK(report.groups[0].major == "cat._input_quantizer");
  CHECK(report.groups[0].members == kResidual);
  CHECK(report.groups[0].rules == Members{"concat", "add"});
  CHECK(report.groups[1].major == "cv3.0._input_quantizer");
  CHECK(report.groups[1].members == kConcat);
  CHECK(report.groups[1].rules == Members{"concat"});
  CHECK(report.groups[2].major == "pool._input_quantizer");
  CHECK(report.groups[2].members == kMaxPool);
  CHECK(report.groups[2].rules == Members{"maxpool"});
  CHECK(report.skipped.empty());
  CHECK(report.group_of("mp2.0._input_quantizer") == &report.groups[2]);
  CHECK(report.group_of("head._input_quantizer") == nullptr);

  // Every member path now holds the group's quantizer object.
  for (const auto& g : report.groups) {
    for (const auto& m : g.members) CHECK(quantizer_at(*model, m) == g.quantizer.get());
  }
  CHECK(input_quantizer_of(model->out).get() == input_quantizer_of(model->cv3).get());
  CHECK(model->add->input0_quantizer().get() == model->cat->input_quantizer().get());
  CHECK(model->add->input1_quantizer().get() == model->cat->input_quantizer().get());
  CHECK(model->cat->input_quantizer()->amax().item<float>() == 3.0f);
  // 3 groups of 2, 3 and 4 quantizers became 3 quantizers; the model computes as before otherwise
  // (the residual group has a fixed amax now, so compare the output of a run without it).
  CHECK(torchqat::quantizers(*model).size() == quantizer_count - 1 - 2 - 3);
  CHECK(model->forward(x).sizes() == before.sizes());
  // Running it again finds the same groups, already shared.
  CHECK(torchqat::share_scales(model, {x}).groups.size() == 3);
}

TEST_CASE("share_scales leaves disabled and differently set quantizers out, rule by rule", "[share_scales]") {
  torch::manual_seed(0);
  torchqat_test::YoloBlock model;
  const auto x = torch::randn({1, 3, 16, 16});
  model->pool->input_quantizer()->disable();
  const auto only_concat = torchqat::share_scales(model, {x}, torchqat::ShareScalesOptions().rules({"concat"}).dry_run(true));
  REQUIRE(only_concat.groups.size() == 2);
  // Without the add rule, the residual group is the concat's readers only.
  CHECK(only_concat.groups[0].members == Members{"cat._input_quantizer", "res.0._input_quantizer", "add._input0_quantizer"});
  const auto report = torchqat::share_scales(model, {x});
  REQUIRE(report.groups.size() == 3);
  CHECK(report.groups[2].members == Members{"mp1.0._input_quantizer", "mp2.0._input_quantizer"});
  REQUIRE(report.skipped.size() == 1);
  CHECK(report.skipped[0].first == "pool._input_quantizer");
  CHECK(report.skipped[0].second == "quantizer disabled (kept float)");
  CHECK_THAT(report.str(), Catch::Contains("skipped pool._input_quantizer: quantizer disabled"));
}
