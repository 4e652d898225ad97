#pragma once
// Internal: seeing which tensor each quantizer is called on during one traced forward
// (share_scales). TensorQuantizerImpl::forward calls the observer of its thread, if one is set,
// before anything else, so disabled quantizers are seen too.
#include <ATen/ATen.h>

#include <functional>

namespace torchqat {
class TensorQuantizerImpl;

namespace detail {

using QuantizerCallObserver = std::function<void(const TensorQuantizerImpl&, const at::Tensor&)>;

// The observer of this thread (null: none).
const QuantizerCallObserver*& quantizer_call_observer();

// Sets the thread's observer for its lifetime (the previous one back afterwards).
class QuantizerCallObserverGuard {
 public:
  explicit QuantizerCallObserverGuard(const QuantizerCallObserver* observer)
      : previous_(quantizer_call_observer()) {
    quantizer_call_observer() = observer;
  }
  ~QuantizerCallObserverGuard() { quantizer_call_observer() = previous_; }
  QuantizerCallObserverGuard(const QuantizerCallObserverGuard&) = delete;
  QuantizerCallObserverGuard& operator=(const QuantizerCallObserverGuard&) = delete;

 private:
  const QuantizerCallObserver* previous_;
};

}  // namespace detail
}  // namespace torchqat
