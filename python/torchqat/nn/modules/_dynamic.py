"""The amax of a dynamic (uncalibrated) quantizer, in eager mode and under ONNX export.

Eagerly it is the batch's abs-max (torchqat.abs_max). While torch's TorchScript exporter traces
the model, it is computed with tracing paused, so the exported graph holds it as a constant: the
Q/DQ scales come from the example input, as pytorch-quantization's dynamic quantizers export.
NVIDIA's YOLOv7 recipe relies on this: it exports before calibrating, to pair quantizers by graph.
torch's default exporter (torch.export based, dynamo=True, what a plain torch.onnx.export runs in
torch 2.11) traces non-strict first, on fake tensors only, so no example-input value exists there:
the amax is then a placeholder of ones, which gives the graph a calibrated export has (Q/DQ with constant scales,
nothing computed from the input) but scales that mean nothing. Each such export warns once that
its scales are not calibrated.
"""
import warnings
import weakref

import torch

from ... import ops

__all__ = ["dynamic_amax", "UNCALIBRATED_EXPORT_WARNING"]

UNCALIBRATED_EXPORT_WARNING = ("torchqat: exporting quantizers that have no amax (not calibrated): their Q/DQ "
                               "scales are taken from the example input. Calibrate before exporting a model "
                               "for deployment.")

# The tracing state of the last export that warned (weakly held: it owns the traced graph):
# one warning per export, not one per quantizer.
_warned_for = [lambda: None]


def _warn_once(state):
    if _warned_for[0]() is state:
        return
    _warned_for[0] = weakref.ref(state)
    warnings.warn(UNCALIBRATED_EXPORT_WARNING, UserWarning, stacklevel=4)


def dynamic_amax(inputs, keep_dims):
    """abs-max of `inputs` over the dims not in keep_dims; a trace constant while tracing."""
    # torch.export's non-strict tracing (torch.onnx.export's first attempt) runs this forward on fake
    # tensors. is_exporting() is also true under Dynamo (torch.compile, strict export), where the
    # compiled graph keeps the abs_max op and computes the real amax: only the non-strict case
    # takes the placeholder.
    if torch.compiler.is_exporting() and not torch.compiler.is_dynamo_compiling():
        from torch._guards import detect_fake_mode
        mode = detect_fake_mode(inputs)
        if mode is not None:
            _warn_once(mode)  # one warning per export: its fake-tensor mode identifies it
        keep = {d % inputs.dim() for d in keep_dims}
        shape = [inputs.shape[d] if d in keep else 1 for d in range(inputs.dim())] if keep else []
        return torch.ones(shape, dtype=torch.float32, device=inputs.device)
    state = torch._C._get_tracing_state()
    if state is None:
        return ops.abs_max(inputs.detach(), keep_dims)
    _warn_once(state)
    torch._C._set_tracing_state(None)
    try:
        # Not traced: the tracer records the result as a constant where the quantizer uses it.
        return ops.abs_max(inputs.detach(), keep_dims)
    finally:
        torch._C._set_tracing_state(state)
