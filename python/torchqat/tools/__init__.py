"""QAT helpers: per-layer sensitivity analysis, partial quantization, feature distillation."""
from .distill import FeatureDistillationLoss
from .sensitivity import SensitivityRow, SensitivityTable, partial_quantize, quantized_layers, sensitivity

__all__ = ["sensitivity", "partial_quantize", "quantized_layers", "SensitivityTable", "SensitivityRow",
           "FeatureDistillationLoss"]
