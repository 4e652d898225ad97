#include "nn/quant_module_map.h"

#include <typeindex>
#include <unordered_map>

#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_conv_transpose.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_pooling.h"

namespace torchqat::nn::detail {
namespace {

using Map = std::unordered_map<std::type_index, QuantModuleEntry>;

// Holder is the float layer's TORCH_MODULE class, the type the quantized constructors take.
template <typename FloatImpl, typename Holder, typename QuantImpl>
void add_weighted(Map& map) {
  map[typeid(FloatImpl)] = QuantModuleEntry{
      false, [](const std::shared_ptr<torch::nn::Module>& m, const std::optional<QuantDescriptor>& in,
                const std::optional<QuantDescriptor>& w) {
        auto q = std::make_shared<QuantImpl>(Holder(std::static_pointer_cast<FloatImpl>(m)), in, w);
        return QuantReplacement{q, torch::nn::AnyModule(q)};
      }};
}

template <typename FloatImpl, typename Holder, typename QuantImpl>
void add_pool(Map& map, bool is_max_pool) {
  map[typeid(FloatImpl)] = QuantModuleEntry{
      is_max_pool, [](const std::shared_ptr<torch::nn::Module>& m, const std::optional<QuantDescriptor>& in,
                      const std::optional<QuantDescriptor>& /*weight: pooling has none*/) {
        auto q = std::make_shared<QuantImpl>(Holder(std::static_pointer_cast<FloatImpl>(m)), in);
        return QuantReplacement{q, torch::nn::AnyModule(q)};
      }};
}

Map build_map() {
  Map m;
  add_weighted<torch::nn::Conv1dImpl, torch::nn::Conv1d, QuantConv1dImpl>(m);
  add_weighted<torch::nn::Conv2dImpl, torch::nn::Conv2d, QuantConv2dImpl>(m);
  add_weighted<torch::nn::Conv3dImpl, torch::nn::Conv3d, QuantConv3dImpl>(m);
  add_weighted<torch::nn::ConvTranspose1dImpl, torch::nn::ConvTranspose1d, QuantConvTranspose1dImpl>(m);
  add_weighted<torch::nn::ConvTranspose2dImpl, torch::nn::ConvTranspose2d, QuantConvTranspose2dImpl>(m);
  add_weighted<torch::nn::ConvTranspose3dImpl, torch::nn::ConvTranspose3d, QuantConvTranspose3dImpl>(m);
  add_weighted<torch::nn::LinearImpl, torch::nn::Linear, QuantLinearImpl>(m);
  add_pool<torch::nn::AvgPool1dImpl, torch::nn::AvgPool1d, QuantAvgPool1dImpl>(m, false);
  add_pool<torch::nn::AvgPool2dImpl, torch::nn::AvgPool2d, QuantAvgPool2dImpl>(m, false);
  add_pool<torch::nn::AvgPool3dImpl, torch::nn::AvgPool3d, QuantAvgPool3dImpl>(m, false);
  add_pool<torch::nn::AdaptiveAvgPool1dImpl, torch::nn::AdaptiveAvgPool1d, QuantAdaptiveAvgPool1dImpl>(m, false);
  add_pool<torch::nn::AdaptiveAvgPool2dImpl, torch::nn::AdaptiveAvgPool2d, QuantAdaptiveAvgPool2dImpl>(m, false);
  add_pool<torch::nn::AdaptiveAvgPool3dImpl, torch::nn::AdaptiveAvgPool3d, QuantAdaptiveAvgPool3dImpl>(m, false);
  add_pool<torch::nn::MaxPool1dImpl, torch::nn::MaxPool1d, QuantMaxPool1dImpl>(m, true);
  add_pool<torch::nn::MaxPool2dImpl, torch::nn::MaxPool2d, QuantMaxPool2dImpl>(m, true);
  add_pool<torch::nn::MaxPool3dImpl, torch::nn::MaxPool3d, QuantMaxPool3dImpl>(m, true);
  return m;
}

}  // namespace

const QuantModuleEntry* find_quant_module_entry(const torch::nn::Module& module) {
  static const Map map = build_map();
  auto it = map.find(typeid(module));
  return it == map.end() ? nullptr : &it->second;
}

}  // namespace torchqat::nn::detail
