"""pytorch-quantization's optim package: parameter grouping and in-place weight quantization."""
from . import helper  # noqa: F401

__all__ = ["helper"]
