"""Calibrators with pytorch-quantization's names and arguments, backed by the C++ ones, and the
model-level calibrate() helper (exported as torchqat.calibrate)."""
from .max import MaxCalibrator  # noqa: F401
from .histogram import HistogramCalibrator  # noqa: F401
from .calibrate import calibrate, calibrate_auto, collect_stats, compute_amax  # noqa: F401
from .auto import AutoReport  # noqa: F401
from .weights import calibrate_weights  # noqa: F401

__all__ = ["MaxCalibrator", "HistogramCalibrator", "calibrate", "calibrate_auto", "AutoReport", "collect_stats", "compute_amax", "calibrate_weights"]
