"""calibrate_weights: set weight amax from the weights alone (no data)."""
import torch

from .histogram import HistogramCalibrator
from .max import MaxCalibrator

__all__ = ["calibrate_weights"]


def calibrate_weights(model, method="percentile", perchannel=True, percentile=99.99, num_bins=2048):
    """Calibrates every module's weight quantizer from its weight ('max', 'percentile' or 'mse').

    Per channel, each output channel gets its own histogram search (axis 1 for ConvTranspose).
    """
    if method not in ("max", "percentile", "mse"):
        raise ValueError(f"method must be 'max', 'percentile' or 'mse', got {method!r}")
    for name, mod in model.named_modules():
        wq = getattr(mod, "_weight_quantizer", None)
        if wq is None or not hasattr(mod, "weight"):
            continue
        w = mod.weight.detach()
        axis = 1 if isinstance(mod, torch.nn.modules.conv._ConvTransposeNd) else 0
        if method == "max":
            cal = MaxCalibrator(wq.num_bits, axis if perchannel else None, wq.unsigned)
            cal.collect(w)
            wq.amax = cal.compute_amax()
            continue
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
