#include "onnx/module_check.h"

#include <c10/util/Type.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/functional.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/modules/upsampling.h>

#include <typeinfo>

#include "torchqat/nn/quant_lstm.h"
#include "torchqat/nn/quant_mixin.h"
#include "torchqat/tensor_quantizer.h"

namespace torchqat::onnx::detail {
namespace {

using torch::nn::Module;

template <typename... Impl>
bool is_any_of(const Module& m) {
  return (... || (dynamic_cast<const Impl*>(&m) != nullptr));
}

// torch::nn leaves whose aten ops the exporter translates (see export.h).
bool is_supported_torch_leaf(const Module& m) {
  namespace tn = torch::nn;
  return is_any_of<tn::Conv1dImpl, tn::Conv2dImpl, tn::Conv3dImpl, tn::ConvTranspose1dImpl, tn::ConvTranspose2dImpl,
                   tn::ConvTranspose3dImpl, tn::LinearImpl, tn::BatchNorm1dImpl, tn::BatchNorm2dImpl,
                   tn::BatchNorm3dImpl, tn::ReLUImpl, tn::ReLU6Impl, tn::HardtanhImpl, tn::SiLUImpl, tn::SigmoidImpl,
                   tn::TanhImpl, tn::LeakyReLUImpl, tn::MaxPool1dImpl, tn::MaxPool2dImpl, tn::MaxPool3dImpl,
                   tn::AvgPool1dImpl, tn::AvgPool2dImpl, tn::AvgPool3dImpl, tn::AdaptiveAvgPool1dImpl,
                   tn::AdaptiveAvgPool2dImpl, tn::AdaptiveAvgPool3dImpl, tn::FlattenImpl, tn::UpsampleImpl,
                   tn::IdentityImpl, tn::DropoutImpl, tn::Dropout2dImpl, tn::Dropout3dImpl, tn::FunctionalImpl>(m);
}

bool is_container(const Module& m) {
  return is_any_of<torch::nn::SequentialImpl, torch::nn::ModuleListImpl, torch::nn::ModuleDictImpl>(m);
}

std::string type_name(const Module& m) { return c10::demangle(typeid(m).name()); }

// A user's own module made of children: its forward is traced, so only its leaves are checked.
// torch::nn and torchqat types are never taken as such (their forwards are not generic).
bool is_user_container(const Module& m) {
  const std::string t = type_name(m);
  return !m.children().empty() && t.rfind("torch::", 0) != 0 && t.rfind("torchqat::", 0) != 0;
}

std::string shown(const std::string& path) { return path.empty() ? std::string("<root>") : path; }

// is_weight: q is the weight quantizer of a quantized layer (QuantMixin::weight_quantizer).
void check_quantizer(const TensorQuantizerImpl& q, const std::string& path, bool is_weight, ModuleInfo& info) {
  const std::string where = "torchqat::onnx::export_model: quantizer '" + shown(path) + "'";
  if (q.disabled()) return;
  TORCH_CHECK(!q.calib_enabled(), where,
              " is in calibration mode (enable_calib); finish calibration (load_calib_amax, disable_calib) first");
  if (!q.quant_enabled()) return;
  TORCH_CHECK_VALUE(q.desc().fake_quant(), where,
                    " does real quantization (fake_quant=false); only fake-quant quantizers export to Q/DQ");
  const bool int4 = !q.desc().is_e4m3() && q.num_bits() == 4;
  TORCH_CHECK_VALUE(!int4 || is_weight, where,
                    " has num_bits=4: INT4 Q/DQ exports for weight quantizers only (TensorRT's INT4 is weight-only); "
                    "use 8 bits or FP8 for activations");
  TORCH_CHECK_VALUE(q.desc().is_e4m3() || q.num_bits() == 8 || int4, where, " has num_bits=", q.num_bits(),
                    "; QuantizeLinear is int8/uint8 (opset 13), FP8 E4M3 (opset 19) or INT4 for weights (opset "
                    "21): use 8 bits or disable it");
  if (q.desc().is_e4m3()) info.fp8_quantizers.push_back(shown(path));
  if (int4) info.int4_quantizers.push_back(shown(path));
  TORCH_CHECK_VALUE(q.has_amax(), where, " has no amax (uncalibrated); calibrate it or disable it");
  at::Tensor a = q.amax().detach().to(at::kCPU, at::kFloat);
  if (q.desc().scale_amax()) a = a * *q.desc().scale_amax();
  TORCH_CHECK_VALUE(at::isfinite(a).all().item<bool>(), where, " has a non-finite amax (NaN or Inf); recalibrate it");
  TORCH_CHECK_VALUE(a.min().item<float>() >= 0.0f, where, " has a negative amax (min ", a.min().item<float>(),
                    "); amax must be >= 0");
  int64_t axes = 0;
  for (int64_t s : a.sizes()) axes += s > 1 ? 1 : 0;
  TORCH_CHECK_VALUE(axes <= 1, where, " has an amax of shape ", a.sizes(), "; ONNX Q/DQ has one quantization axis");
  info.quantizer_paths.emplace(q.amax().data_ptr(), path);
}

void check_tensor(const at::Tensor& t, const std::string& name, const char* what, ModuleInfo& info) {
  if (!t.defined() || !t.is_floating_point()) return;  // integer buffers (num_batches_tracked) are not exported
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat, "torchqat::onnx::export_model: ", what, " '", name, "' is ",
                    t.scalar_type(), "; export_model exports float32 models (convert with module->to(torch::kFloat32))");
  info.tensor_names.emplace(t.data_ptr(), name);
}

void walk(const Module& m, const std::string& path, bool is_weight, ModuleInfo& info) {
  if (const auto* q = dynamic_cast<const TensorQuantizerImpl*>(&m)) {
    check_quantizer(*q, path, is_weight, info);
    return;
  }
  // Checked before the QuantMixin test below: a QuantLSTMCell is one, but its forward has no translation.
  const bool recurrent = is_any_of<nn::QuantLSTMImpl, nn::QuantLSTMCellImpl>(m);
  TORCH_CHECK_VALUE(!recurrent, "torchqat::onnx::export_model: module '",
                    shown(path), "' of type ", type_name(m),
                    " cannot be exported: the C++ exporter has no LSTM translation; export the same model from Python "
                    "with torchqat.onnx.export (it unrolls QuantLSTM/QuantLSTMCell into per-step Q/DQ and Gemm)");
  const bool known = dynamic_cast<const nn::QuantInputMixin*>(&m) != nullptr || is_supported_torch_leaf(m) ||
                     is_container(m) || is_user_container(m);
  TORCH_CHECK_VALUE(known, "torchqat::onnx::export_model: module '", shown(path), "' of type ", type_name(m),
                    " is not supported; supported are torchqat's quantized modules, torch::nn containers, user modules "
                    "made of children, and the torch::nn layers listed in torchqat/onnx/export.h");
  const auto* mixin = dynamic_cast<const nn::QuantMixin*>(&m);
  const Module* weight_quantizer = mixin ? mixin->weight_quantizer().get() : nullptr;
  for (const auto& child : m.named_children()) {
    walk(*child.value(), path.empty() ? child.key() : path + "." + child.key(),
         weight_quantizer != nullptr && child.value().get() == weight_quantizer, info);
  }
}

}  // namespace

ModuleInfo check_module(const Module& root) {
  ModuleInfo info;
  walk(root, "", /*is_weight=*/false, info);
  // Names are taken after the walk so that a tensor registered twice keeps its first name.
  for (const auto& p : root.named_parameters(/*recurse=*/true)) check_tensor(p.value(), p.key(), "parameter", info);
  for (const auto& b : root.named_buffers(/*recurse=*/true)) check_tensor(b.value(), b.key(), "buffer", info);
  return info;
}

}  // namespace torchqat::onnx::detail
