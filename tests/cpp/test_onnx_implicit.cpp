// export_tensorrt_implicit: the ONNX has no Q/DQ node and still runs the same layers, every cache
// entry (parsed here from the format's definition) names a tensor of that graph with the
// calibrated amax / 127 bit for bit, and a shared quantizer gives its tensors one value.
#include "catch_torch.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "onnx_reader.h"
#include "onnx_test_model.h"
#include "torchqat/onnx/implicit.h"

namespace {

// header, {name: scale}: "name: <8 hex digits of the float32 bits, big-endian>" per line.
std::pair<std::string, std::map<std::string, float>> read_cache(const std::string& path) {
  std::ifstream in(path);
  std::string header, line;
  std::getline(in, header);
  std::map<std::string, float> out;
  while (std::getline(in, line)) {
    const auto sep = line.rfind(": ");
    REQUIRE(sep != std::string::npos);
    const std::string hex = line.substr(sep + 2);
    REQUIRE(hex.size() == 8);
    const uint32_t bits = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
    float v;
    std::memcpy(&v, &bits, sizeof(v));
    out[line.substr(0, sep)] = v;
  }
  return {header, out};
}

}  // namespace

TEST_CASE("export_tensorrt_implicit writes a Q/DQ-free ONNX and a cache of amax / 127", "[onnx][implicit]") {
  torch::manual_seed(0);
  torchqat_test::TinyResNet model;
  torchqat_test::randomize_batch_norms(*model);
  model->eval();
  std::vector<at::Tensor> batches;
  for (int i = 0; i < 2; ++i) batches.push_back(torch::randn({4, 3, 8, 8}));
  torchqat_test::calibrate(model, batches);
  const auto dir = std::filesystem::temp_directory_path() / "torchqat_implicit_test";
  std::filesystem::create_directories(dir);
  const std::string onnx_path = (dir / "m.onnx").string(), cache_path = (dir / "m.cache").string();
  const auto scales = torchqat::onnx::export_tensorrt_implicit(
      model, {torch::randn({1, 3, 8, 8})}, onnx_path, cache_path,
      torchqat::onnx::ExportOptions().input_names({"images"}));

  const auto m = torchqat_test::read_onnx(onnx_path);
  std::set<std::string> tensors = {"images"};
  std::map<std::string, int> ops;
  for (const auto& n : m.nodes) {
    ++ops[n.op_type];
    tensors.insert(n.outputs.begin(), n.outputs.end());
  }
  REQUIRE(ops.count("QuantizeLinear") == 0);
  REQUIRE(ops.count("DequantizeLinear") == 0);
  REQUIRE(ops["Conv"] == 2);
  REQUIRE(ops["Gemm"] == 1);
  for (const auto& t : m.initializers) REQUIRE(t.name.find("_quantizer") == std::string::npos);

  const auto [header, cache] = read_cache(cache_path);
  REQUIRE(header == "TRT-8XXX-EntropyCalibration2");
  REQUIRE(cache.size() == scales.size());
  for (const auto& [name, s] : cache) {
    INFO(name);
    REQUIRE(tensors.count(name) == 1);
    REQUIRE(scales.at(name) == s);
  }
  // The first conv reads the graph input: its input quantizer's amax / 127, bit for bit.
  const float stem = model->stem[0]->as<torchqat::nn::QuantConv2dImpl>()->input_quantizer()->amax().item<float>();
  REQUIRE(cache.at("images") == stem / 127.0f);
  // The shared QuantAdd quantizer: both summands carry its one scale.
  const float add = model->add->input0_quantizer()->amax().item<float>();
  int with_add_scale = 0;
  for (const auto& [name, s] : cache) with_add_scale += s == add / 127.0f;
  REQUIRE(with_add_scale >= 2);
  // std::remove, not std::filesystem::remove_all: libtorch exports a copy of the latter that crashes here.
  std::remove(onnx_path.c_str());
  std::remove(cache_path.c_str());
}
