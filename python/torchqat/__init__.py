"""torchqat: quantization-aware training and calibration for PyTorch/LibTorch, exporting QDQ ONNX.

The numeric core is C++/CUDA, reached as torch.ops.torchqat.*; this package holds state
(modules, quantizers) and calls those ops.
"""
from . import _loader

_C = _loader.load()

__version__ = _C.version()

from . import tensor_quant  # noqa: E402
from . import nn  # noqa: E402
from . import calib  # noqa: E402
from .calib import calibrate  # noqa: E402,F401


def cuda_compiled():
    """True when this build carries the CUDA kernels."""
    return _C.cuda_compiled()


# CUDA amax checks (one device sync per quantizer call): on by default, off for loops that keep a
# known-valid amax on the GPU. CPU checks cost no sync and always run.
set_cuda_amax_checks = _C.set_cuda_amax_checks
cuda_amax_checks = _C.cuda_amax_checks

# Insertion, placement, BN folding and QAT tools.
from . import quant_modules  # noqa: E402
from .quant_modules import initialize, deactivate  # noqa: E402,F401  (pytorch_quantization.initialize)
from .quantize_model import quantize_model  # noqa: E402
from . import placement  # noqa: E402
from .placement import share_scales  # noqa: E402,F401
from .bn_fold import fold_bn  # noqa: E402,F401
from . import tools  # noqa: E402

# QDQ ONNX export for TensorRT; importing it registers the export symbolics.
from . import onnx  # noqa: E402
from .onnx import enable_onnx_export  # noqa: E402,F401
from .checkpoint import load_state_dict  # noqa: E402,F401
# pytorch-quantization's packages: utils (reduce_amax, quant_logging), optim.helper, cuda_ext.
from . import utils, optim, cuda_ext  # noqa: E402,F401
