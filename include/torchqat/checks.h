#pragma once
// Documented switch: value checks of CUDA amax tensors. Checking that a CUDA amax is
// finite and >= 0 needs a device-to-host copy (a sync) per call; training loops that keep
// amax on the GPU can turn it off once amax is known to be valid. CPU amax is always checked.
namespace torchqat {
void set_cuda_amax_checks(bool enabled);
bool cuda_amax_checks();
}  // namespace torchqat
