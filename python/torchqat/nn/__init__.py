"""Quantized modules and the TensorQuantizer, with pytorch-quantization's names."""
from .modules.tensor_quantizer import TensorQuantizer  # noqa: F401
