#pragma once
// The rules of model-level calibration that torchqat::calibrate (C++) and torchqat.calibrate
// (Python) share: which methods exist, which calibrator a quantizer gets for a method, and which
// histogram search a method means.
#include <string>
#include <vector>

namespace torchqat {
namespace calib {

// "max", "entropy", "percentile", "mse" (and "auto" where allow_auto): every method calibrate takes.
const std::vector<std::string>& calibrate_methods(bool allow_auto = true);

// c10::ValueError "<what>: method must be one of ..., got '<method>'" for another method.
void check_calibrate_method(const std::string& method, const std::string& what, bool allow_auto = true);

// A quantizer collects a histogram when the method searches one and the quantizer is per tensor;
// per-channel quantizers (weights by default) and method "max" collect a running max.
bool uses_histogram(const std::string& method, bool per_channel);

// The search a histogram calibrator runs for a method: the method itself, "percentile" for "max"
// (a histogram configured by hand, loaded with the max method).
std::string histogram_search(const std::string& method);

}  // namespace calib
}  // namespace torchqat
