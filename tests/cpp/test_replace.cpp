// replace_with_quant_modules: Sequential / ModuleList / ModuleDict / custom parents, patterns,
// per-pattern descriptors, shared layers, and the errors raised before anything changes.
#include "catch_torch.h"
#include <torch/torch.h>

#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_conv_transpose.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_pooling.h"
#include "torchqat/nn/replace.h"

namespace tqnn = torchqat::nn;
using torchqat::QuantDescriptor;
using Names = std::vector<std::string>;

namespace {

// Collects TORCH_WARN messages for the duration of a test.
struct WarningCollector : c10::WarningHandler {
  std::vector<std::string> messages;
  void process(const c10::Warning& w) override { messages.push_back(w.msg()); }
  bool any_contains(const std::string& s) const {
    for (const auto& m : messages) {
      if (m.find(s) != std::string::npos) return true;
    }
    return false;
  }
};

// Switches every quantizer in the tree off, so a quantized model must compute its float original.
void disable_quantizers(torch::nn::Module& m) {
  for (const auto& sub : m.modules()) {
    if (auto* q = dynamic_cast<torchqat::TensorQuantizerImpl*>(sub.get())) q->disable();
  }
}

// Sequential's templated forward keeps it out of AnyModule, so a nested one needs a concrete forward.
struct BlockImpl : torch::nn::SequentialImpl {
  using SequentialImpl::SequentialImpl;
  at::Tensor forward(const at::Tensor& x) { return SequentialImpl::forward(x); }
};
TORCH_MODULE(Block);

torch::nn::Sequential backbone_and_head() {
  using namespace torch::nn;
  Block backbone(Conv2d(Conv2dOptions(3, 8, 3).padding(1)), ReLU(),
                      Block(Conv2d(Conv2dOptions(8, 8, 3).padding(1)), MaxPool2d(MaxPool2dOptions(2)),
                                 ConvTranspose2d(ConvTranspose2dOptions(8, 8, 2).stride(2))));
  Block head(AdaptiveAvgPool2d(AdaptiveAvgPool2dOptions(1)), Flatten(), Linear(8, 4));
  Sequential model;
  model->push_back("backbone", backbone);
  model->push_back("head", head);
  return model;
}

// A custom module that calls its layers through members: replacing them in the tree alone
// would leave forward on the float layers.
struct MemberNetImpl : torch::nn::Module {
  MemberNetImpl() : conv(register_module("conv", torch::nn::Conv2d(3, 4, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return conv(x); }
  torch::nn::Conv2d conv;
};
TORCH_MODULE(MemberNet);

// A custom module that calls its layers by name: replacements reach its forward.
struct ByNameNetImpl : torch::nn::Module {
  ByNameNetImpl() { register_module("conv", std::make_shared<torch::nn::Conv2dImpl>(torch::nn::Conv2dOptions(3, 4, 3))); }
  at::Tensor forward(const at::Tensor& x) {
    auto child = named_children()["conv"];
    if (auto q = std::dynamic_pointer_cast<tqnn::QuantConv2dImpl>(child)) return q->forward(x);
    return std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(child)->forward(x);
  }
};
TORCH_MODULE(ByNameNet);

// A user subclass of a torch layer: it may change behaviour, so it is not replaced.
struct MyConvImpl : torch::nn::Conv2dImpl {
  using Conv2dImpl::Conv2dImpl;
};

}  // namespace

TEST_CASE("replacement inside nested Sequentials reaches Sequential::forward", "[nn][replace]") {
  torch::manual_seed(0);
  auto model = backbone_and_head();
  auto x = torch::randn({2, 3, 8, 8});
  const auto float_out = model->forward(x);
  const auto float_params = model->named_parameters().keys();

  const auto replaced = tqnn::replace_with_quant_modules(model);
  REQUIRE(replaced == Names{"backbone.0", "backbone.2.0", "backbone.2.2", "head.0", "head.2"});  // MaxPool stays float
  auto inner = model->ptr<BlockImpl>(0)->ptr<BlockImpl>(2);
  REQUIRE(inner->ptr<tqnn::QuantConv2dImpl>(0));
  REQUIRE(inner->ptr<torch::nn::MaxPool2dImpl>(1));
  REQUIRE(inner->ptr<tqnn::QuantConvTranspose2dImpl>(2));
  REQUIRE(inner->named_children()["2"].get() == inner->ptr(2).get());  // registration and stored entry agree
  REQUIRE(model->named_parameters().keys() == float_params);           // same weights, same names

  // Forward goes through the quantized modules: quantized output differs, and with the
  // quantizers off it is the float model's, bit for bit (weights were copied).
  const auto quant_out = model->forward(x);
  REQUIRE(!torch::equal(quant_out, float_out));
  disable_quantizers(*model);
  REQUIRE(torch::equal(model->forward(x), float_out));

  // A second pass finds nothing left to replace.
  REQUIRE(tqnn::replace_with_quant_modules(model).empty());
}

TEST_CASE("include / exclude patterns select subtrees, max_pool is opt-in", "[nn][replace]") {
  {
    auto model = backbone_and_head();
    auto r = tqnn::replace_with_quant_modules(model, tqnn::ReplaceOptions().exclude({"head"}).max_pool(true));
    REQUIRE(r == Names{"backbone.0", "backbone.2.0", "backbone.2.1", "backbone.2.2"});
    REQUIRE(model->ptr<BlockImpl>(1)->ptr<torch::nn::LinearImpl>(2));
  }
  {
    auto model = backbone_and_head();
    auto r = tqnn::replace_with_quant_modules(model, tqnn::ReplaceOptions().include({"backbone.2.*"}).exclude({"*.2.2"}));
    REQUIRE(r == Names{"backbone.2.0"});
  }
  {
    auto model = backbone_and_head();
    auto r = tqnn::replace_with_quant_modules(model, tqnn::ReplaceOptions().include({"head.[02]"}));
    REQUIRE(r == Names{"head.0", "head.2"});
  }
}

TEST_CASE("a pattern that matches no module name is a warning", "[nn][replace]") {
  auto model = backbone_and_head();
  WarningCollector warnings;
  c10::WarningUtils::WarningHandlerGuard guard(&warnings);
  auto r = tqnn::replace_with_quant_modules(
      model, tqnn::ReplaceOptions().exclude({"detect*", "head"}).rules({tqnn::QuantRule("neck.*")}));
  REQUIRE(r.size() == 3);
  REQUIRE(warnings.any_contains("exclude pattern 'detect*' matches no module name"));
  REQUIRE(warnings.any_contains("rule pattern 'neck.*' matches no module name"));
  REQUIRE(!warnings.any_contains("'head'"));
}

TEST_CASE("descriptors: options for all layers, rules per pattern (last match wins)", "[nn][replace]") {
  auto model = backbone_and_head();
  auto opts = tqnn::ReplaceOptions()
                  .quant_desc_input(QuantDescriptor().calib_method("histogram"))
                  .rules({tqnn::QuantRule("backbone*").quant_desc_weight(
                              QuantDescriptor().num_bits(6).axis(std::vector<int64_t>{0})),
                          tqnn::QuantRule("backbone.0").quant_desc_input(QuantDescriptor().num_bits(4))});
  tqnn::replace_with_quant_modules(model, opts);
  auto backbone = model->ptr<BlockImpl>(0);
  auto first = backbone->ptr<tqnn::QuantConv2dImpl>(0);
  REQUIRE(first->input_quantizer()->num_bits() == 4);
  REQUIRE(first->weight_quantizer()->num_bits() == 6);
  auto second = backbone->ptr<BlockImpl>(2)->ptr<tqnn::QuantConv2dImpl>(0);
  REQUIRE(second->input_quantizer()->desc().calib_method() == "histogram");
  REQUIRE(second->weight_quantizer()->num_bits() == 6);
  auto fc = model->ptr<BlockImpl>(1)->ptr<tqnn::QuantLinearImpl>(2);
  REQUIRE(fc->weight_quantizer()->num_bits() == 8);  // the class default
}

TEST_CASE("an invalid descriptor names the layer and leaves the model unchanged", "[nn][replace][errors]") {
  auto model = backbone_and_head();
  auto opts = tqnn::ReplaceOptions().rules(
      {tqnn::QuantRule("head.2").quant_desc_weight(QuantDescriptor().axis(std::vector<int64_t>{3}))});
  CHECK_THROWS_WITH(tqnn::replace_with_quant_modules(model, opts),
                    Catch::Contains("cannot quantize 'head.2'") && Catch::Contains("QuantLinear: quant_desc_weight axis 3"));
  REQUIRE(model->ptr<BlockImpl>(0)->ptr<torch::nn::Conv2dImpl>(0));
}

TEST_CASE("ModuleList and ModuleDict entries are replaced, not only their registrations", "[nn][replace]") {
  torch::nn::ModuleList list(torch::nn::Linear(4, 4), torch::nn::ReLU(), torch::nn::Linear(4, 2));
  torch::nn::ModuleDict dict(std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>{
      {"pool", std::make_shared<torch::nn::AvgPool1dImpl>(torch::nn::AvgPool1dOptions(2))},
      {"fc", std::make_shared<torch::nn::LinearImpl>(torch::nn::LinearOptions(2, 2))}});
  auto root = std::make_shared<torch::nn::Module>();  // containers without forward live in a plain parent
  root->register_module("list", list);
  root->register_module("dict", dict);
  auto r = tqnn::replace_with_quant_modules(root);
  REQUIRE(r == Names{"list.0", "list.2", "dict.pool", "dict.fc"});
  REQUIRE(list->ptr<tqnn::QuantLinearImpl>(0));
  REQUIRE(list->ptr<tqnn::QuantLinearImpl>(2));
  REQUIRE(list->named_children()["0"].get() == list->ptr(0).get());
  REQUIRE(std::dynamic_pointer_cast<tqnn::QuantAvgPool1dImpl>(dict["pool"]));
  REQUIRE(dict->named_children()["fc"].get() == dict["fc"].get());
}

TEST_CASE("a layer registered twice becomes one quantized layer registered twice", "[nn][replace]") {
  torch::nn::Conv2d shared(torch::nn::Conv2dOptions(4, 4, 1));
  torch::nn::Sequential seq(shared, torch::nn::ReLU(), shared);
  shared = nullptr;  // the Sequential owns it now
  auto r = tqnn::replace_with_quant_modules(seq);
  REQUIRE(r == Names{"0", "2"});
  REQUIRE(seq->ptr(0).get() == seq->ptr(2).get());
  REQUIRE(seq->ptr<tqnn::QuantConv2dImpl>(0));
}

TEST_CASE("custom parents: by-name lookups are rewired, member holders are an error", "[nn][replace][errors]") {
  ByNameNet by_name;
  REQUIRE(tqnn::replace_with_quant_modules(by_name) == Names{"conv"});
  REQUIRE(std::dynamic_pointer_cast<tqnn::QuantConv2dImpl>(by_name->named_children()["conv"]));

  torch::nn::Sequential model(MemberNet(), torch::nn::Conv2d(4, 4, 1));
  CHECK_THROWS_WITH(tqnn::replace_with_quant_modules(model),
                    Catch::Contains("'0.conv' also held outside the module tree") &&
                        Catch::Contains("Nothing was replaced"));
  REQUIRE(model->ptr<torch::nn::Conv2dImpl>(1));  // untouched
  // Excluding the custom module lets the rest be quantized.
  REQUIRE(tqnn::replace_with_quant_modules(model, tqnn::ReplaceOptions().exclude({"0"})) == Names{"1"});
}

TEST_CASE("subclasses of torch layers and the root itself are left alone", "[nn][replace]") {
  torch::nn::Sequential seq;
  seq->push_back(std::make_shared<MyConvImpl>(torch::nn::Conv2dOptions(3, 3, 1)));
  REQUIRE(tqnn::replace_with_quant_modules(seq).empty());
  torch::nn::Conv2d lone(3, 3, 1);
  REQUIRE(tqnn::replace_with_quant_modules(lone).empty());
}
