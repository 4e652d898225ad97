from .tensor_quantizer import TensorQuantizer  # noqa: F401
