"""Checks a model's quantizers before QDQ ONNX export; each error names the quantizer's module path."""
import torch

from ..nn.modules.tensor_quantizer import TensorQuantizer
from ..tensor_quant import is_e4m3

__all__ = ["blocked_quantizers", "check_quantizers", "exported_quantizers", "fp8_quantizers", "int4_weights"]


def exported_quantizers(model):
    """[(path, quantizer)] of the quantizers that emit a Q/DQ pair (enabled, quantizing), each object once
    under its first module path."""
    seen, out = set(), []
    for path, m in model.named_modules(remove_duplicate=False):
        if not isinstance(m, TensorQuantizer) or id(m) in seen:
            continue
        seen.add(id(m))
        if m.disabled:
            continue
        if m.if_calib:
            raise RuntimeError(f"{path} is in calibration mode (enable_calib); finish calibration "
                               "(load_calib_amax / disable_calib, or torchqat.calibrate) before export")
        if m.if_quant:
            out.append((path or "<model>", m))
    return out


def fp8_quantizers(model):
    """The module paths of the exported FP8 E4M3 (num_bits=(4, 3)) quantizers."""
    return [path for path, q in exported_quantizers(model) if is_e4m3(q.num_bits)]


def int4_weights(model):
    """{weight parameter name: quantizer} of the exported 4-bit weight quantizers (their module's
    `weight`, as the exporter names the initializer)."""
    out = {}
    for path, q in exported_quantizers(model):
        if q.num_bits == 4 and path.endswith("._weight_quantizer") and q.block_size is None:
            out[path[: -len("._weight_quantizer")] + ".weight"] = q
    return out


def blocked_quantizers(model):
    """[(path, quantizer)] of the exported quantizers with a block_size (blocked Q/DQ, opset 21)."""
    return [(path, q) for path, q in exported_quantizers(model) if q.block_size is not None]


def check_quantizers(model):
    """Raises ValueError/RuntimeError for the first quantizer that cannot become a TensorRT Q/DQ pair:
    num_bits != 8, amax NaN/Inf/negative, real (non-fake) quantization,
    an amax over more than one axis. A zero amax is fine (see symbolic.ZERO_AMAX_SCALE). A quantizer without
    amax (dynamic mode) exports with scales from the example input, with one warning per export."""
    for path, q in exported_quantizers(model):
        if not q.fake_quant:
            raise ValueError(f"{path} uses real quantization (fake_quant=False); only fake-quant quantizers export "
                             "to Q/DQ")
        if q.num_bits == 4 and not path.endswith("_weight_quantizer"):
            raise ValueError(f"{path} has num_bits=4: INT4 Q/DQ exports for weight quantizers only (TensorRT's "
                             "INT4 is weight-only); use 8 bits or FP8 for activations")
        if q.num_bits not in (4, 8) and not is_e4m3(q.num_bits):
            raise ValueError(f"{path} has num_bits={q.num_bits}: opset 13 Q/DQ is int8/uint8 only; disable it or "
                             "use 8 bits for export")
        # A learned range (learn_amax) quantizes with max(-clip_value_min, clip_value_max).
        amax = torch.maximum(-q.clip.clip_value_min, q.clip.clip_value_max) if q.learn_amax else q.amax
        if amax is None and q.block_size is not None:
            raise ValueError(f"{path} has a block_size and no amax: calibrate it (torchqat.calibrate) before export "
                             "(a blocked scale is an initializer, not traced from the example input)")
        if amax is None:
            continue  # dynamic: its scale is traced from the example input (nn/modules/_dynamic.py)
        a = amax.detach().float()
        if q._scale_amax is not None:
            a = a * q._scale_amax
        if not torch.isfinite(a).all():
            raise ValueError(f"{path} has a non-finite amax ({a.flatten()[:8].tolist()}); recalibrate it")
        if (a < 0).any():
            raise ValueError(f"{path} has a negative amax (min {a.min().item()}); amax must be >= 0")
        if a.numel() > 1 and sum(1 for s in a.shape if s > 1) > 1 and q.block_size is None:
            raise ValueError(f"{path} has an amax of shape {tuple(a.shape)}: ONNX Q/DQ has one quantization axis")
