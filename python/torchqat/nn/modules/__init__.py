"""The quantized modules, one file each with pytorch-quantization's names (quant_conv, quant_linear, ...)."""
from .tensor_quantizer import TensorQuantizer  # noqa: F401
from .quant_conv import *  # noqa: F401,F403
from .quant_linear import *  # noqa: F401,F403
from .quant_pooling import *  # noqa: F401,F403
from .quant_add import *  # noqa: F401,F403
from .quant_rnn import *  # noqa: F401,F403
from .quant_instancenorm import *  # noqa: F401,F403
from .clip import *  # noqa: F401,F403
from ._utils import QuantMixin, QuantInputMixin, pop_quant_desc_in_kwargs  # noqa: F401
