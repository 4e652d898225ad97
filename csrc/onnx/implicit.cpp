// export_tensorrt_implicit: the QDQ model with its Q/DQ pairs removed, and TensorRT's calibration
// cache from the removed activation Qs' scales (python/torchqat/onnx/implicit.py's strip_qdq).
#include "torchqat/onnx/implicit.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

#include "onnx/build_model.h"
#include "torchqat/quant_rules.h"

namespace torchqat::onnx {
namespace {

constexpr const char* kWhat = "torchqat::onnx::export_tensorrt_implicit";

float scalar_float(const detail::OnnxTensor& t) {
  TORCH_CHECK_VALUE(t.dtype == detail::DataType::kFloat && t.raw_data.size() == sizeof(float), kWhat,
                    ": activation scale '", t.name, "' is not one float32 (a per-channel activation scale has ",
                    t.raw_data.size() / sizeof(float), " values; TensorRT's cache holds one scale per tensor)");
  float v;
  std::memcpy(&v, t.raw_data.data(), sizeof(float));
  return v;
}

// Removes every Q -> DQ pair of model; returns {tensor an activation Q read: its int8 scale}.
std::map<std::string, float> strip_qdq(detail::Model& model) {
  std::unordered_map<std::string, const detail::OnnxTensor*> inits;
  for (const auto& t : model.initializers) inits[t.name] = &t;
  std::unordered_map<std::string, const detail::OnnxNode*> producers;
  for (const auto& n : model.nodes) {
    for (const auto& o : n.outputs) producers[o] = &n;
  }
  std::unordered_map<std::string, std::string> rename;
  std::unordered_set<const detail::OnnxNode*> drop;
  std::map<std::string, float> scales;
  for (const auto& dq : model.nodes) {
    if (dq.op_type != "DequantizeLinear") continue;
    auto it = producers.find(dq.inputs.at(0));
    TORCH_CHECK_VALUE(it != producers.end() && it->second->op_type == "QuantizeLinear", kWhat,
                      ": DequantizeLinear '", dq.name, "' does not read a QuantizeLinear");
    const auto& q = *it->second;
    const std::string& x = q.inputs.at(0);
    rename[dq.outputs.at(0)] = x;
    drop.insert(&q);
    drop.insert(&dq);
    if (inits.count(x)) continue;  // a weight: TensorRT's implicit mode computes its own weight scales
    float s = scalar_float(*inits.at(q.inputs.at(1)));
    if (q.inputs.size() > 2 && inits.at(q.inputs[2])->dtype == detail::DataType::kUInt8) {
      // unsigned: the int8 scale of its range, s * 255 / 127
      s = static_cast<float>(static_cast<double>(s) * static_cast<double>(quant_bound(8, true)) /
                             static_cast<double>(quant_bound(8, false)));
    }
    auto [pos, fresh] = scales.emplace(x, s);
    TORCH_CHECK_VALUE(fresh || pos->second == s, kWhat, ": tensor '", x, "' is quantized with two scales (",
                      pos->second, " and ", s, ")");
  }
  auto resolve = [&](std::string name) {
    for (auto r = rename.find(name); r != rename.end(); r = rename.find(name)) name = r->second;
    return name;
  };
  std::vector<detail::OnnxNode> kept;
  for (const auto& n : model.nodes) {
    if (drop.count(&n)) continue;
    kept.push_back(n);
    for (auto& in : kept.back().inputs) in = resolve(in);
  }
  for (auto& o : model.outputs) o.name = resolve(o.name);
  model.nodes = std::move(kept);
  std::unordered_set<std::string> used;
  for (const auto& n : model.nodes) used.insert(n.inputs.begin(), n.inputs.end());
  for (const auto& o : model.outputs) used.insert(o.name);
  std::vector<detail::OnnxTensor> inits_kept;
  for (auto& t : model.initializers) {
    if (used.count(t.name)) inits_kept.push_back(std::move(t));
  }
  model.initializers = std::move(inits_kept);
  return scales;
}

void write_cache(const std::map<std::string, float>& scales, const std::string& path, const std::string& header) {
  std::ofstream f(path, std::ios::binary);
  TORCH_CHECK_VALUE(f.good(), kWhat, ": cannot write the cache to ", path);
  f << header << "\n";
  for (const auto& [name, s] : scales) {
    TORCH_CHECK_VALUE(name.find(':') == std::string::npos && name.find('\n') == std::string::npos, kWhat,
                      ": tensor name '", name, "' cannot be written in the cache (it holds ':' or a newline)");
    TORCH_CHECK_VALUE(std::isfinite(s) && s > 0, kWhat, ": the scale of '", name, "' must be finite and > 0, got ", s);
    uint32_t bits;
    std::memcpy(&bits, &s, sizeof(bits));
    char hex[9];
    std::snprintf(hex, sizeof(hex), "%08x", bits);
    f << name << ": " << hex << "\n";
  }
  TORCH_CHECK_VALUE(f.good(), kWhat, ": writing ", path, " failed");
}

}  // namespace

std::map<std::string, float> export_tensorrt_implicit(const std::shared_ptr<torch::nn::Module>& module,
                                                      const ForwardFunction& forward,
                                                      const std::vector<at::Tensor>& example_inputs,
                                                      const std::string& onnx_path, const std::string& cache_path,
                                                      const ExportOptions& options, const std::string& header) {
  TORCH_CHECK_VALUE(!onnx_path.empty() && !cache_path.empty(), kWhat, ": onnx_path and cache_path must be given");
  TORCH_CHECK_VALUE(!header.empty() && header.find('\n') == std::string::npos, kWhat,
                    ": header must be one non-empty line, got '", header, "'");
  detail::Model model = detail::build_model(module, forward, example_inputs, options);
  const auto scales = strip_qdq(model);
  write_cache(scales, cache_path, header);
  try {
    detail::write_model(model, onnx_path);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, kWhat, ": ", e.what());
  }
  return scales;
}

}  // namespace torchqat::onnx
