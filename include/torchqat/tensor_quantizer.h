#pragma once
// TensorQuantizer: the quantize / calibrate / disabled state machine around one tensor, as a
// torch::nn module. Its amax is the buffer "_amax" (a parameter when learned), the key
// pytorch-quantization checkpoints use.
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "torchqat/calib/calibrator.h"
#include "torchqat/quant_descriptor.h"

namespace torchqat {

class TensorQuantizerImpl : public torch::nn::Cloneable<TensorQuantizerImpl> {
 public:
  explicit TensorQuantizerImpl(QuantDescriptor desc = QuantDescriptor());

  void reset() override;
  at::Tensor forward(const at::Tensor& x);

  void enable() { disabled_ = false; }
  void disable() { disabled_ = true; }
  void enable_quant() { if_quant_ = true; }
  void disable_quant() { if_quant_ = false; }
  // Uses the calibrator set, else makes the one the descriptor's calib_method names.
  void enable_calib();
  void disable_calib() { if_calib_ = false; }
  bool disabled() const { return disabled_; }
  bool quant_enabled() const { return if_quant_; }
  bool calib_enabled() const { return if_calib_; }

  void set_calibrator(calib::CalibratorPtr c) { calibrator_ = std::move(c); }
  calib::CalibratorPtr calibrator() const { return calibrator_; }
  // Writes the calibrator's amax into _amax. strict: no data collected is an error (else a
  // warning and amax stays as it was).
  void load_calib_amax(const calib::AmaxOptions& opts = {}, bool strict = true);

  bool has_amax() const { return amax_.defined(); }
  // The amax tensor (undefined in dynamic mode).
  const at::Tensor& amax() const { return amax_; }
  // Sets amax (checked: finite, >= 0; shape fixed once set).
  void set_amax(const at::Tensor& amax);

  const QuantDescriptor& desc() const { return desc_; }
  int64_t num_bits() const { return desc_.num_bits(); }
  int64_t maxbound() const;  // 448 for FP8 E4M3
  at::Tensor step_size() const;

  void pretty_print(std::ostream& stream) const override;

 private:
  at::Tensor current_amax(const at::Tensor& x) const;
  std::string display_name() const;

  QuantDescriptor desc_;
  bool disabled_ = false;
  bool if_quant_ = true;
  bool if_calib_ = false;
  at::Tensor amax_;
  calib::CalibratorPtr calibrator_;
};

TORCH_MODULE(TensorQuantizer);

}  // namespace torchqat
