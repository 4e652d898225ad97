"""QDQ ONNX export for TensorRT.

    torchqat.onnx.export(model, (x,), "model.onnx", opset_version=13,
                         input_names=["images"], output_names=["out"],
                         dynamic_axes={"images": {0: "batch"}, "out": {0: "batch"}})
    violations = torchqat.onnx.lint_tensorrt("model.onnx")

- symbolic: torchqat::fake_quant -> QuantizeLinear/DequantizeLinear (registered on `import torchqat`)
- translations: the same for torch.onnx's default (dynamo) exporter, via onnxscript (registered too)
- checks:   the quantizer checks run before export (uncalibrated, num_bits, bad amax)
- export:   export(), on torch's TorchScript exporter
- cleanup:  shared scale initializers, merged duplicate Q/DQ pairs
- switches: enable_onnx_export() and TensorQuantizer.use_fb_fake_quant (pytorch-quantization compatibility)
- lint:     lint_tensorrt(), TensorRT's explicit-quantization rules on the exported graph
- implicit: export_tensorrt_implicit(), a Q/DQ-free ONNX + TensorRT calibration cache (implicit INT8)
"""
from . import symbolic, translations
from .checks import check_quantizers
from .cleanup import clean
from .export import export
from .implicit import export_tensorrt_implicit, read_calibration_cache, strip_qdq, write_calibration_cache
from .lint import RULES, Violation, lint_tensorrt
from .switches import enable_onnx_export
from .symbolic import ZERO_AMAX_SCALE, register

__all__ = ["export", "export_tensorrt_implicit", "strip_qdq", "write_calibration_cache", "read_calibration_cache",
           "lint_tensorrt", "clean", "Violation", "RULES", "enable_onnx_export", "check_quantizers",
           "register", "ZERO_AMAX_SCALE"]

register()
translations.register()
