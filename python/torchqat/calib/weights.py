"""calibrate_weights: set weight amax from the weights alone (no data)."""
import torch

from .histogram import HistogramCalibrator
from .max import MaxCalibrator
from ..nn.modules.quant_weights import quant_weights

__all__ = ["calibrate_weights"]


def calibrate_weights(model, method="percentile", perchannel=True, percentile=99.99, num_bins=2048):
    """Calibrates every module's weight quantizer from its weight ('max', 'percentile' or 'mse').

    Per channel, each output channel gets its own histogram search (axis 1 for ConvTranspose).
    Every weight quantizer a module names (nn.modules.quant_weights: one per LSTM layer x
    direction, on its fused [W_ih, W_hh]) is calibrated from the tensor it quantizes.
    """
    if method not in ("max", "percentile", "mse"):
        raise ValueError(f"method must be 'max', 'percentile' or 'mse', got {method!r}")
    for _name, mod in model.named_modules():
        for _qname, w, wq, axis in quant_weights(mod):
            _calibrate_one(w.detach(), wq, axis, method, perchannel, percentile, num_bins)


def _calibrate_one(w, wq, axis, method, perchannel, percentile, num_bins):
    """Sets wq.amax from the weight w it quantizes."""
    if wq.block_size is not None:  # one amax per block: max only (no histogram per block)
        if method != "max":
            raise ValueError(f"calibrate_weights: method {method!r} for a quantizer with block_size "
                             f"{wq.block_size}; blocked quantizers calibrate with method='max'")
        cal = MaxCalibrator(wq.num_bits, wq.calibration_axis, wq.unsigned)
        cal.collect(wq.calibration_input(w))
        wq.amax = cal.compute_amax()
        return
    if method == "max":
        cal = MaxCalibrator(wq.num_bits, axis if perchannel else None, wq.unsigned)
        cal.collect(w)
        wq.amax = cal.compute_amax()
        return
    channels = w.unbind(axis) if perchannel else [w]
    amaxes = []
    for c in channels:
        cal = HistogramCalibrator(wq.num_bits, None, wq.unsigned, num_bins=num_bins)
        cal.collect(c)
        amaxes.append(cal.compute_amax(method, percentile=percentile))
    amax = torch.stack(amaxes)
    if perchannel:
        shape = [1] * w.dim()
        shape[axis] = w.shape[axis]
        amax = amax.reshape(shape)
    else:
        amax = amax.reshape(())
    wq.amax = amax
