#pragma once
// QuantDescriptor: how one tensor is quantized. Fields mirror pytorch-quantization's
// QuantDescriptor; set them builder-style (QuantDescriptor().num_bits(4).axis({0})).
#include <torch/arg.h>

#include <optional>
#include <string>
#include <vector>

namespace torchqat {

// The number format of a quantizer: the symmetric integer grid of num_bits bits, or FP8 E4M3
// (float8_e4m3fn, scale 448 / amax; pytorch-quantization's num_bits=(4, 3)).
enum class QuantFormat { kInt, kE4M3 };

struct QuantDescriptor {
  TORCH_ARG(int64_t, num_bits) = 8;  // integer format only
  TORCH_ARG(QuantFormat, format) = QuantFormat::kInt;
  // Dims that keep their own amax (per channel); nullopt = per tensor.
  TORCH_ARG(std::optional<std::vector<int64_t>>, axis) = std::nullopt;
  // Fixed amax (one value per tensor, or one per channel); nullopt = calibrate or dynamic.
  TORCH_ARG(std::optional<std::vector<float>>, amax) = std::nullopt;
  TORCH_ARG(bool, learn_amax) = false;
  TORCH_ARG(std::optional<double>, scale_amax) = std::nullopt;
  TORCH_ARG(std::string, calib_method) = "max";  // "max" or "histogram"
  TORCH_ARG(bool, is_unsigned) = false;
  TORCH_ARG(bool, narrow_range) = false;
  TORCH_ARG(bool, fake_quant) = true;
  TORCH_ARG(std::string, name) = "";


 public:
  bool is_e4m3() const { return format_ == QuantFormat::kE4M3; }
  // Throws c10::ValueError naming the field when a value is out of range.
  void validate() const;
  std::string str() const;
  bool operator==(const QuantDescriptor& o) const;
};

// pytorch-quantization's predefined descriptors.
QuantDescriptor quant_desc_8bit_per_tensor();
QuantDescriptor quant_desc_unsigned_8bit_per_tensor();
QuantDescriptor quant_desc_8bit_weight_per_channel();            // Conv / Linear weights: axis 0
QuantDescriptor quant_desc_8bit_convtranspose_weight_per_channel();  // ConvTranspose weights: axis 1
QuantDescriptor quant_desc_e4m3_per_tensor();                        // FP8 E4M3, num_bits=(4, 3)

}  // namespace torchqat
