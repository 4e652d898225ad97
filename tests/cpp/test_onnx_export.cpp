// torchqat::onnx::export_model: the exported file read back with onnx::ModelProto (Q/DQ count,
// axes, zero points, scale values, shared scales, dynamic batch, names) and its errors. ONNX
// Runtime numerics are checked from Python (tests/python/test_onnx_cpp_export.py).
#include "catch_torch.h"
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>

#include <unistd.h>

#include "onnx_reader.h"
#include "onnx_test_model.h"
#include "torchqat/nn/quant_conv_transpose.h"
#include "torchqat/onnx/export.h"

namespace tqnn = torchqat::nn;
namespace tqo = torchqat::onnx;
using torchqat::onnx::detail::DataType;
using torchqat::onnx::detail::Model;
using torchqat::onnx::detail::OnnxNode;
using torchqat::onnx::detail::OnnxTensor;
using torchqat_test::read_onnx;
using torchqat_test::TinyResNet;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("torchqat_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

// Exports and reads back; the file is removed.
template <typename Holder>
Model export_and_read(Holder& model, std::vector<at::Tensor> inputs, const tqo::ExportOptions& options = {}) {
  const std::string path = temp_path("model.onnx");
  tqo::export_model(model, inputs, path, options);
  Model m = read_onnx(path);
  std::filesystem::remove(path);
  return m;
}

size_t count(const Model& m, const std::string& op) {
  size_t n = 0;
  for (const auto& node : m.nodes) n += node.op_type == op ? 1 : 0;
  return n;
}

std::vector<const OnnxNode*> nodes_of(const Model& m, const std::string& op) {
  std::vector<const OnnxNode*> out;
  for (const auto& node : m.nodes) {
    if (node.op_type == op) out.push_back(&node);
  }
  return out;
}

const OnnxNode* producer(const Model& m, const std::string& name) {
  for (const auto& node : m.nodes) {
    for (const auto& o : node.outputs) {
      if (o == name) return &node;
    }
  }
  return nullptr;
}

const OnnxTensor& initializer(const Model& m, const std::string& name) {
  for (const auto& t : m.initializers) {
    if (t.name == name) return t;
  }
  FAIL("no initializer " << name);
  throw std::logic_error("unreachable");
}

bool has_initializer(const Model& m, const std::string& name) {
  for (const auto& t : m.initializers) {
    if (t.name == name) return true;
  }
  return false;
}

std::vector<float> floats(const OnnxTensor& t) {
  REQUIRE(t.dtype == DataType::kFloat);
  std::vector<float> v(t.raw_data.size() / sizeof(float));
  std::memcpy(v.data(), t.raw_data.data(), t.raw_data.size());
  return v;
}

std::optional<int64_t> int_attribute(const OnnxNode& n, const std::string& name) {
  for (const auto& a : n.attributes) {
    if (a.name == name) return std::get<int64_t>(a.value);
  }
  return std::nullopt;
}

std::vector<int64_t> static_shape(const torchqat::onnx::detail::ValueInfo& v) {
  std::vector<int64_t> dims;
  for (const auto& d : v.shape) dims.push_back(std::get<int64_t>(d));
  return dims;
}

// The QuantizeLinear node whose scale is `<quantizer_path>.scale`.
std::vector<const OnnxNode*> q_nodes_of(const Model& m, const std::string& quantizer_path) {
  std::vector<const OnnxNode*> out;
  for (const auto* q : nodes_of(m, "QuantizeLinear")) {
    if (q->inputs.at(1) == quantizer_path + ".scale") out.push_back(q);
  }
  return out;
}

TinyResNet calibrated_model() {
  torch::manual_seed(0);
  TinyResNet model;
  torchqat_test::randomize_batch_norms(*model);
  model->eval();
  torchqat_test::calibrate(model, {torch::randn({4, 3, 8, 8}), torch::randn({4, 3, 8, 8})});
  return model;
}

}  // namespace

TEST_CASE("export_model writes a QDQ ONNX model of the residual net", "[onnx]") {
  auto model = calibrated_model();
  model->train();
  const Model m = export_and_read(model, {torch::randn({2, 3, 8, 8})});

  REQUIRE(m.ir_version == 7);
  REQUIRE(m.opset_version == 13);
  REQUIRE(m.producer_name == "torchqat");

  SECTION("one Q/DQ pair per quantizer application, a DQ right after each Q") {
    // stem conv (input, weight), branch conv (input, weight), add (x and y through one shared
    // quantizer), max pool, concat (two inputs), global pool, fc (input, weight).
    REQUIRE(count(m, "QuantizeLinear") == 12);
    REQUIRE(count(m, "DequantizeLinear") == 12);
    for (const auto* dq : nodes_of(m, "DequantizeLinear")) {
      const OnnxNode* q = producer(m, dq->inputs.at(0));
      REQUIRE(q != nullptr);
      REQUIRE(q->op_type == "QuantizeLinear");
      REQUIRE(q->inputs.at(1) == dq->inputs.at(1));
      REQUIRE(q->inputs.at(2) == dq->inputs.at(2));
      REQUIRE(int_attribute(*q, "axis") == int_attribute(*dq, "axis"));
    }
  }

  SECTION("the layers' ops are there, every Conv/Gemm reads DQ outputs") {
    for (const char* op : {"Conv", "BatchNormalization", "Relu", "Sigmoid", "Mul", "Add", "MaxPool", "Resize", "Concat",
                           "GlobalAveragePool", "Flatten", "Gemm"}) {
      INFO(op);
      REQUIRE(count(m, op) >= 1);
    }
    for (const char* op : {"Conv", "Gemm"}) {
      for (const auto* n : nodes_of(m, op)) {
        REQUIRE(producer(m, n->inputs.at(0))->op_type == "DequantizeLinear");
        REQUIRE(producer(m, n->inputs.at(1))->op_type == "DequantizeLinear");
      }
    }
  }

  SECTION("zero points are int8 zeros shaped like their scale") {
    for (const auto* q : nodes_of(m, "QuantizeLinear")) {
      const auto& scale = initializer(m, q->inputs.at(1));
      const auto& zp = initializer(m, q->inputs.at(2));
      REQUIRE(zp.dtype == DataType::kInt8);
      REQUIRE(zp.dims == scale.dims);
      for (char c : zp.raw_data) REQUIRE(c == 0);
    }
  }

  SECTION("weights: parameter-named initializers, per output channel on axis 0, scale = amax / 127") {
    const std::map<std::string, torchqat::TensorQuantizer> weights{
        {"stem.0", model->stem[0]->as<tqnn::QuantConv2d>()->weight_quantizer()},
        {"branch.0", model->branch[0]->as<tqnn::QuantConv2d>()->weight_quantizer()},
        {"fc", model->fc->weight_quantizer()}};
    for (const auto& [layer, quantizer] : weights) {
      INFO(layer);
      const auto qs = q_nodes_of(m, layer + "._weight_quantizer");
      REQUIRE(qs.size() == 1);
      REQUIRE(qs[0]->inputs.at(0) == layer + ".weight");
      REQUIRE(has_initializer(m, layer + ".weight"));
      REQUIRE(int_attribute(*qs[0], "axis") == 0);
      const auto scale = floats(initializer(m, layer + "._weight_quantizer.scale"));
      const auto amax = quantizer->amax().flatten();
      REQUIRE(scale.size() == static_cast<size_t>(amax.numel()));
      for (size_t i = 0; i < scale.size(); ++i) REQUIRE(scale[i] == amax[i].item<float>() / 127.0f);
    }
  }

  SECTION("activations: per tensor, scale = amax / 127; shared quantizers have one scale") {
    const auto qs = q_nodes_of(m, "stem.0._input_quantizer");
    REQUIRE(qs.size() == 1);
    REQUIRE_FALSE(int_attribute(*qs[0], "axis").has_value());
    const auto& scale = initializer(m, "stem.0._input_quantizer.scale");
    REQUIRE(scale.dims.empty());
    REQUIRE(floats(scale)[0] ==
            model->stem[0]->as<tqnn::QuantConv2d>()->input_quantizer()->amax().item<float>() / 127.0f);
    REQUIRE(q_nodes_of(m, "add._input0_quantizer").size() == 2);
    REQUIRE(q_nodes_of(m, "cat._input_quantizer").size() == 2);
    REQUIRE(producer(m, nodes_of(m, "Concat")[0]->inputs.at(0))->op_type == "DequantizeLinear");
  }

  SECTION("inputs and outputs: default names, static shapes") {
    REQUIRE(m.inputs.size() == 1);
    REQUIRE(m.inputs[0].name == "input");
    REQUIRE(static_shape(m.inputs[0]) == std::vector<int64_t>{2, 3, 8, 8});
    REQUIRE(m.outputs.size() == 1);
    REQUIRE(m.outputs[0].name == "output");
    REQUIRE(static_shape(m.outputs[0]) == std::vector<int64_t>{2, 10});
    REQUIRE(producer(m, "output")->op_type == "Gemm");
  }

  SECTION("the model is left as it was: training flags, requires_grad") {
    for (const auto& sub : model->modules()) REQUIRE(sub->is_training());
    for (const auto& p : model->parameters()) REQUIRE(p.requires_grad());
  }
}

TEST_CASE("export_model: dynamic batch and names", "[onnx]") {
  auto model = calibrated_model();
  const Model m = export_and_read(model, {torch::randn({2, 3, 8, 8})},
                                  tqo::ExportOptions().dynamic_batch(true).input_names({"images"}).output_names({"logits"}));
  REQUIRE(m.inputs[0].name == "images");
  REQUIRE(std::get<std::string>(m.inputs[0].shape[0]) == "batch");
  REQUIRE(std::get<int64_t>(m.inputs[0].shape[1]) == 3);
  REQUIRE(m.outputs[0].name == "logits");
  REQUIRE(std::get<std::string>(m.outputs[0].shape[0]) == "batch");
  // Resize by scales, not by sizes (which would fix the batch).
  const auto* resize = nodes_of(m, "Resize").at(0);
  REQUIRE(resize->inputs.size() == 3);
  REQUIRE(floats(initializer(m, resize->inputs[2])) == std::vector<float>{1, 1, 2, 2});
}

TEST_CASE("export_model: ConvTranspose weights on axis 1, unsigned, zero amax, narrow range", "[onnx]") {
  torch::manual_seed(3);
  tqnn::QuantConvTranspose2d deconv(torch::nn::ConvTranspose2dOptions(4, 6, 2).stride(2),
                                    torchqat::QuantDescriptor().amax(std::vector<float>{2.0f}).is_unsigned(true));
  {
    torch::NoGradGuard no_grad;
    const auto amax = deconv->weight.abs().amax({0, 2, 3}, /*keepdim=*/true);  // [1, 6, 1, 1]
    amax[0][1].zero_();  // an all-zero channel
    deconv->weight_quantizer()->set_amax(amax);
  }
  const Model m = export_and_read(deconv, {torch::rand({1, 4, 5, 5})});
  REQUIRE(count(m, "ConvTranspose") == 1);

  const auto w = q_nodes_of(m, "_weight_quantizer");
  REQUIRE(w.size() == 1);
  REQUIRE(int_attribute(*w[0], "axis") == 1);
  const auto scale = floats(initializer(m, "_weight_quantizer.scale"));
  REQUIRE(scale.size() == 6);
  REQUIRE(scale[1] == tqo::kZeroAmaxScale);
  for (float s : scale) REQUIRE(s > 0.0f);

  const auto in = q_nodes_of(m, "_input_quantizer");
  REQUIRE(in.size() == 1);
  REQUIRE(initializer(m, "_input_quantizer.zero_point").dtype == DataType::kUInt8);
  REQUIRE(floats(initializer(m, "_input_quantizer.scale"))[0] == 2.0f / 255.0f);

  // Narrow range exports as the full int8 range with the same scale amax / 127 (export.h): the
  // Q/DQ pair and its int8 zero point are there, and the scale is not amax / 126 or amax / 254.
  tqnn::QuantLinear fc(torch::nn::LinearOptions(4, 3),
                       torchqat::QuantDescriptor().amax(std::vector<float>{1.5f}).narrow_range(true),
                       tqnn::QuantLinearImpl::default_quant_desc_weight().narrow_range(true));
  {
    torch::NoGradGuard no_grad;
    fc->weight_quantizer()->set_amax(torch::full({3, 1}, 0.5f));
  }
  REQUIRE(fc->input_quantizer()->desc().narrow_range());
  REQUIRE(fc->weight_quantizer()->desc().narrow_range());
  const Model nr = export_and_read(fc, {torch::randn({2, 4})});
  REQUIRE(count(nr, "QuantizeLinear") == 2);
  REQUIRE(count(nr, "DequantizeLinear") == 2);
  REQUIRE(initializer(nr, "_input_quantizer.zero_point").dtype == DataType::kInt8);
  REQUIRE(floats(initializer(nr, "_input_quantizer.scale"))[0] == 1.5f / 127.0f);
  REQUIRE(floats(initializer(nr, "_weight_quantizer.scale")) == std::vector<float>(3, 0.5f / 127.0f));
}

TEST_CASE("export_model: plain torch::nn layers, disabled quantizers and multi-input forwards", "[onnx]") {
  torch::manual_seed(4);
  torch::nn::Sequential net(torch::nn::Conv1d(torch::nn::Conv1dOptions(2, 4, 3).padding(1)), torch::nn::BatchNorm1d(4),
                            torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)),
                            torch::nn::AvgPool1d(2), torch::nn::Flatten(), torch::nn::Linear(16, 3),
                            torch::nn::Sigmoid());
  const Model m = export_and_read(net, {torch::randn({2, 2, 8})});
  REQUIRE(count(m, "QuantizeLinear") == 0);
  for (const char* op : {"Conv", "BatchNormalization", "LeakyRelu", "AveragePool", "Flatten", "Gemm", "Sigmoid"}) {
    INFO(op);
    REQUIRE(count(m, op) == 1);
  }

  tqnn::QuantLinear fc(torch::nn::LinearOptions(4, 4), torchqat::QuantDescriptor().amax(std::vector<float>{1.0f}));
  fc->weight_quantizer()->disable();
  const Model one_sided = export_and_read(fc, {torch::randn({2, 4})});
  REQUIRE(count(one_sided, "QuantizeLinear") == 1);

  tqnn::QuantAdd add;
  add->input0_quantizer()->set_amax(torch::tensor(3.0f));
  const std::string path = temp_path("add.onnx");
  tqo::export_model(add, {torch::randn({2, 5}), torch::randn({2, 5})}, path,
                    tqo::ExportOptions().input_names({"a", "b"}));
  const Model two = read_onnx(path);
  std::filesystem::remove(path);
  REQUIRE(two.inputs.size() == 2);
  REQUIRE(two.inputs[1].name == "b");
  REQUIRE(count(two, "QuantizeLinear") == 2);
  REQUIRE(count(two, "Add") == 1);
}

namespace {

struct ExpModuleImpl : torch::nn::Module {
  ExpModuleImpl() { conv = register_module("conv", torch::nn::Conv2d(1, 1, 1)); }
  at::Tensor forward(const at::Tensor& x) { return conv(x).exp(); }
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(ExpModule);

template <typename Holder>
void require_export_error(Holder& model, const at::Tensor& x, const std::vector<std::string>& parts) {
  const std::string path = temp_path("error.onnx");
  try {
    tqo::export_model(model, {x}, path);
    FAIL("export_model did not throw");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& p : parts) {
      INFO(msg);
      REQUIRE(msg.find(p) != std::string::npos);
    }
  }
  REQUIRE_FALSE(std::filesystem::exists(path));
}

}  // namespace

TEST_CASE("export_model errors name the quantizer, module or op", "[onnx]") {
  const auto x = torch::randn({1, 3, 8, 8});

  SECTION("an uncalibrated quantizer") {
    TinyResNet model;
    require_export_error(model, x, {"stem.0._input_quantizer", "no amax"});
  }
  SECTION("num_bits != 8") {
    torch::nn::Sequential net(tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3),
                                                torchqat::QuantDescriptor().num_bits(4).amax(std::vector<float>{1.0f}),
                                                torchqat::QuantDescriptor().amax(std::vector<float>{1.0f})));
    require_export_error(net, x, {"0._input_quantizer", "num_bits=4", "weight quantizers only"});
    torch::nn::Sequential six(tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3),
                                                torchqat::QuantDescriptor().amax(std::vector<float>{1.0f}),
                                                torchqat::QuantDescriptor().num_bits(6).amax(std::vector<float>{1.0f})));
    require_export_error(six, x, {"0._weight_quantizer", "num_bits=6"});
  }
  SECTION("a NaN, infinite or negative amax") {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1.0f}) {
      auto model = calibrated_model();
      model->fc->input_quantizer()->amax().fill_(bad);  // set_amax refuses these; a loaded checkpoint may not
      require_export_error(model, x, {"fc._input_quantizer", bad < 0 ? "negative amax" : "non-finite amax"});
    }
  }
  SECTION("a quantizer left in calibration mode") {
    auto model = calibrated_model();
    model->gap->input_quantizer()->enable_calib();
    require_export_error(model, x, {"gap._input_quantizer", "calibration mode"});
  }
  SECTION("an unsupported module, by path and type") {
    torch::nn::Sequential net(torch::nn::Conv2d(3, 4, 1), torch::nn::GELU());
    require_export_error(net, x, {"module '1'", "torch::nn::GELUImpl", "not supported"});
  }
  SECTION("an op without translation") {
    ExpModule model;
    require_export_error(model, torch::randn({1, 1, 4, 4}), {"aten::exp", "no ONNX translation"});
  }
  SECTION("a non-float32 model") {
    torch::nn::Sequential net{torch::nn::Linear(3, 3)};
    net->to(torch::kDouble);
    require_export_error(net, torch::randn({1, 3}), {"'0.weight'", "Double"});
  }
}

TEST_CASE("export_model fails clearly when the file cannot be written", "[onnx]") {
  torch::nn::Sequential net{torch::nn::ReLU()};
  REQUIRE_THROWS_WITH(tqo::export_model(net, {torch::randn({1, 2})}, "/nonexistent-dir/model.onnx"),
                      Catch::Contains("/nonexistent-dir/model.onnx"));
}

TEST_CASE("export_model: FP8 E4M3 quantizers give FLOAT8E4M3FN Q/DQ at opset 19", "[onnx][fp8]") {
  torch::nn::Sequential model(
      torchqat::TensorQuantizer(torchqat::quant_desc_e4m3_per_tensor().amax(std::vector<float>{2.0f})),
      torch::nn::Linear(4, 3));
  const Model m = export_and_read(model, {torch::randn({2, 4})});
  REQUIRE(m.opset_version == tqo::kFp8OpsetVersion);
  REQUIRE(m.ir_version == tqo::kFp8IrVersion);
  REQUIRE(count(m, "QuantizeLinear") == 1);
  const auto* q = nodes_of(m, "QuantizeLinear").at(0);
  const auto& scale = initializer(m, q->inputs.at(1));
  const auto& zp = initializer(m, q->inputs.at(2));
  REQUIRE(zp.dtype == DataType::kFloat8E4M3FN);
  REQUIRE(zp.raw_data == std::string(1, '\0'));
  float s = 0.0f;
  std::memcpy(&s, scale.raw_data.data(), sizeof(float));
  REQUIRE(s == 2.0f / 448.0f);

  // Without FP8 quantizers the model stays at opset 13.
  torch::nn::Sequential int8(torchqat::TensorQuantizer(torchqat::QuantDescriptor().amax(std::vector<float>{2.0f})),
                             torch::nn::Linear(4, 3));
  REQUIRE(export_and_read(int8, {torch::randn({2, 4})}).opset_version == 13);
}

TEST_CASE("export_model: FP8 weight quantizers keep their Q/DQ pair on the weight initializer", "[onnx][fp8]") {
  // A quantizer of a constant (the weight) is never folded into a fake-quantized fp32 weight.
  torch::manual_seed(0);
  tqnn::QuantLinear fc(torch::nn::LinearOptions(4, 3), torchqat::quant_desc_e4m3_per_tensor(),
                       torchqat::quant_desc_e4m3_per_tensor().axis(std::vector<int64_t>{0}));
  torchqat_test::calibrate(fc, {torch::randn({8, 4})});
  const Model m = export_and_read(fc, {torch::randn({2, 4})});
  const auto qs = q_nodes_of(m, "_weight_quantizer");
  REQUIRE(qs.size() == 1);
  REQUIRE(qs[0]->inputs.at(0) == "weight");
  REQUIRE(int_attribute(*qs[0], "axis") == 0);
  REQUIRE(initializer(m, qs[0]->inputs.at(2)).dtype == DataType::kFloat8E4M3FN);
  REQUIRE(floats(initializer(m, "weight")) ==
          std::vector<float>(fc->weight.data_ptr<float>(), fc->weight.data_ptr<float>() + fc->weight.numel()));
}

TEST_CASE("export_model: 4-bit weight quantizers give INT4 Q/DQ at opset 21", "[onnx][int4]") {
  torch::manual_seed(0);
  TinyResNet model(torchqat::QuantDescriptor().num_bits(4).axis(std::vector<int64_t>{0}));
  torchqat_test::randomize_batch_norms(*model);
  model->eval();
  torchqat_test::calibrate(model, {torch::randn({4, 3, 8, 8}), torch::randn({4, 3, 8, 8})});
  const Model m = export_and_read(model, {torch::randn({2, 3, 8, 8})});
  REQUIRE(m.opset_version == tqo::kInt4OpsetVersion);
  REQUIRE(m.ir_version == tqo::kInt4IrVersion);
  REQUIRE(count(m, "QuantizeLinear") == 12);  // nothing folded away: the same pairs as at 8 bits

  const std::map<std::string, torchqat::TensorQuantizer> weights{
      {"stem.0", model->stem[0]->as<tqnn::QuantConv2d>()->weight_quantizer()},
      {"branch.0", model->branch[0]->as<tqnn::QuantConv2d>()->weight_quantizer()},
      {"fc", model->fc->weight_quantizer()}};
  for (const auto& [layer, quantizer] : weights) {
    INFO(layer);
    const auto qs = q_nodes_of(m, layer + "._weight_quantizer");
    REQUIRE(qs.size() == 1);
    // The Q reads the fp32 weight initializer itself, per output channel.
    REQUIRE(qs[0]->inputs.at(0) == layer + ".weight");
    REQUIRE(initializer(m, layer + ".weight").dtype == DataType::kFloat);
    REQUIRE(int_attribute(*qs[0], "axis") == 0);
    const auto scale = floats(initializer(m, qs[0]->inputs.at(1)));
    const auto amax = quantizer->amax().flatten();
    REQUIRE(scale.size() == static_cast<size_t>(amax.numel()));
    for (size_t i = 0; i < scale.size(); ++i) REQUIRE(scale[i] == amax[i].item<float>() / 7.0f);
    // INT4 zeros of the scale's shape, packed two per byte.
    const auto& zp = initializer(m, qs[0]->inputs.at(2));
    REQUIRE(zp.dtype == DataType::kInt4);
    REQUIRE(zp.dims == initializer(m, qs[0]->inputs.at(1)).dims);
    REQUIRE(zp.raw_data == std::string((scale.size() + 1) / 2, '\0'));
    const OnnxNode* dq = nodes_of(m, "DequantizeLinear").at(0);
    for (const auto* d : nodes_of(m, "DequantizeLinear")) {
      if (d->inputs.at(0) == qs[0]->outputs.at(0)) dq = d;
    }
    REQUIRE(dq->inputs.at(0) == qs[0]->outputs.at(0));
    REQUIRE(dq->inputs.at(2) == qs[0]->inputs.at(2));
  }
  // The activations stay int8.
  for (const auto* q : q_nodes_of(m, "stem.0._input_quantizer")) {
    REQUIRE(initializer(m, q->inputs.at(2)).dtype == DataType::kInt8);
  }

  SECTION("unsigned 4-bit weights: UINT4, scale amax / 15") {
    tqnn::QuantLinear fc(torch::nn::LinearOptions(4, 3), std::nullopt,
                         torchqat::QuantDescriptor().num_bits(4).is_unsigned(true).axis(std::vector<int64_t>{0}));
    {
      torch::NoGradGuard no_grad;
      fc->weight.abs_();
    }
    torchqat_test::calibrate(fc, {torch::rand({8, 4})});
    const Model u = export_and_read(fc, {torch::rand({2, 4})});
    const auto* q = q_nodes_of(u, "_weight_quantizer").at(0);
    REQUIRE(initializer(u, q->inputs.at(2)).dtype == DataType::kUInt4);
    REQUIRE(floats(initializer(u, q->inputs.at(1)))[0] == fc->weight_quantizer()->amax().flatten()[0].item<float>() / 15.0f);
  }
}
