"""`python -m torchqat.demo`: torchqat end to end on Fashion-MNIST.

Float training (or a cached checkpoint) -> PTQ with max / entropy / percentile / mse calibration ->
QAT fine-tuning -> QDQ ONNX export -> ONNX Runtime, the same (PTQ, QAT, ONNX Runtime) for FP8 E4M3
and for 4-bit weights with 8-bit activations (w4a8), printed as one table and drawn in a PNG. See `python -m torchqat.demo --help`.
"""
from .run import main, parse_args  # noqa: F401

__all__ = ["main", "parse_args"]
