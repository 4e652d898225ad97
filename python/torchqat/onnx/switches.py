"""pytorch-quantization's export switches, kept so existing export scripts run unchanged.

- 2.1.x: `quant_nn.TensorQuantizer.use_fb_fake_quant = True` before torch.onnx.export;
- 2.2.x: `with pytorch_quantization.enable_onnx_export(): torch.onnx.export(...)`.

In torchqat neither changes what a quantizer computes: the symbolics that turn torchqat's
fake_quant op into QuantizeLinear/DequantizeLinear are registered on `import torchqat`, so a
plain `torch.onnx.export(model, x, f, opset_version=13, dynamo=False)` gives the same Q/DQ model
with or without them; so does torch's default dynamo exporter (dynamo=True), through the onnxscript
translations in translations.py.
"""
from ..nn.modules.tensor_quantizer import TensorQuantizer
from . import symbolic

__all__ = ["enable_onnx_export"]


class enable_onnx_export:  # noqa: N801  (a function-like context manager, as torch.no_grad)
    """Sets TensorQuantizer._enable_onnx_export (and makes sure the symbolics are registered).

    Works as pytorch-quantization 2.2's context manager (`with torchqat.enable_onnx_export(): ...`,
    the flag is restored on exit) and as a plain call (the flag then stays set).
    """

    def __init__(self):
        symbolic.register()
        self._previous = TensorQuantizer._enable_onnx_export
        TensorQuantizer._enable_onnx_export = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        TensorQuantizer._enable_onnx_export = self._previous
        return False
