"""pytorch-quantization's utils: reduce_amax and quant_logging.

As there, `torchqat.utils.reduce_amax` is the function (the submodule of that name is
`torchqat.utils.reduce_amax` in sys.modules only).
"""
from . import quant_logging  # noqa: F401
from .reduce_amax import reduce_amax  # noqa: F401

__all__ = ["reduce_amax", "quant_logging"]
