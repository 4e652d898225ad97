"""`python -m torchqat.demo`: torchqat end to end on Fashion-MNIST.

Float training (or a cached checkpoint) -> PTQ with max / entropy / percentile / mse calibration ->
QAT fine-tuning -> QDQ ONNX export -> ONNX Runtime, plus a 4-bit-weight PTQ vs QAT pair, printed as
one table and drawn in a PNG. See `python -m torchqat.demo --help`.
"""
from .run import main, parse_args  # noqa: F401

__all__ = ["main", "parse_args"]
