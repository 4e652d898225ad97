"""lint_tensorrt: TensorRT's explicit-quantization rules, checked on a QDQ ONNX graph (structure only).

Rules (each violation carries its rule name):
- opset:            the default-domain opset is >= 13 (per-channel Q/DQ), >= 19 with FP8 (FLOAT8E4M3FN) Q/DQ.
- constant-scale:   every Q/DQ scale and zero point is an initializer or a Constant.
- identity-scale:   ... and read directly, not through Identity nodes (plain torch.onnx.export writes
                    Identity nodes for equal initializers; torchqat.onnx.export / clean() removes them).
- scale-value:      scales are fp32, finite and > 0.
- zero-point:       zero points are int8 (or uint8 with allow_uint8), float8_e4m3fn (FP8 E4M3) or
                    int4 / uint4 (opset 21, weights only: TensorRT's INT4 is weight-only), and
                    shaped like the scale.
- symmetric:        zero points are all 0 ("TRT only supports symmetric quantization").
- qdq-pair:         a QuantizeLinear feeds only DequantizeLinear nodes with the same scale, zero point
                    and axis; a DequantizeLinear reads a QuantizeLinear or a constant (int8 weights).
- per-tensor-activation: per-channel Q/DQ only on weights (initializer-fed); activations per tensor.
- weight-axis:      a per-channel weight Q/DQ uses the output-channel axis of its consumer: 0 for Conv and
                    Gemm(transB=1), 1 for ConvTranspose and Gemm(transB=0), the last axis for MatMul.
- block:            a blocked Q/DQ (block_size, opset 21) is on a weight and has a 2-d scale.
- quantized-inputs: Conv, ConvTranspose, Gemm and MatMul get a DequantizeLinear on every data input
                    (input and weight, not bias), or on none (a float layer, allowed unless
                    allow_float_layers=False).
- concat-scale:     the Q/DQ around a Concat (the Q nodes reading its output or any of its inputs, the DQ
                    nodes producing its inputs) share one scale, so TensorRT can remove the Concat.
- maxpool-scale:    a MaxPool whose output feeds a Q: that Q and the Q/DQ on its input share one scale
                    (TensorRT runs the MaxPool in int8 between them).
- residual-add:     an Add with an operand from a quantized weighted layer (through BatchNormalization and
                    pointwise activations, SiLU as Sigmoid + Mul included) has its other operand from a
                    DequantizeLinear (or a constant): TensorRT fuses the layer with the Add only when the
                    skip input is int8.
"""
import dataclasses

import numpy as np

__all__ = ["lint_tensorrt", "Violation", "RULES"]

RULES = ("opset", "constant-scale", "identity-scale", "scale-value", "zero-point", "symmetric", "qdq-pair",
         "per-tensor-activation", "weight-axis", "block", "quantized-inputs", "concat-scale", "maxpool-scale",
         "residual-add")

# Zero-point dtypes beyond int8/uint8 TensorRT takes, and the opset whose Q/DQ first has them.
_EXTRA_ZP_OPSET = {"float8_e4m3fn": 19, "int4": 21, "uint4": 21}

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_SHAPE_ONLY = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
_POINTWISE = ("Relu", "LeakyRelu", "HardSwish", "Elu", "Gelu", "Mish", "Clip", "PRelu", "BatchNormalization",
              "Identity")


@dataclasses.dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    message: str

    def __str__(self):
        return f"[{self.rule}] {self.node}: {self.message}"


class _Graph:
    def __init__(self, graph):
        from onnx import numpy_helper

        self.nodes = list(graph.node)
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.consts = {}
        for n in self.nodes:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
                    elif a.name == "value_float":
                        self.consts[n.output[0]] = np.array(a.f, dtype=np.float32)
                    elif a.name == "value_int":
                        self.consts[n.output[0]] = np.array(a.i, dtype=np.int64)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers = {}
        for n in self.nodes:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)

    def through_identity(self, name):
        """(name of the constant an Identity chain starts from, whether there was an Identity)."""
        seen = False
        for _ in range(16):
            p = self.producer.get(name)
            if p is None or p.op_type != "Identity" or name in self.inits:
                break
            name, seen = p.input[0], True
        return name, seen

    def value(self, name):
        name = self.through_identity(name)[0]
        if name in self.inits:
            return self.inits[name]
        return self.consts.get(name)

    def is_constant(self, name):
        name = self.through_identity(name)[0]
        return name in self.inits or name in self.consts

    def readers(self, name, op_type):
        return [n for n in self.consumers.get(name, []) if n.op_type == op_type]


def _label(node):
    return node.name or f"{node.op_type}({node.output[0] if node.output else ''})"


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else a.f if a.type == a.FLOAT else default
    return default


def _opset(model):
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return None


def lint_tensorrt(model, allow_float_layers=True, allow_uint8=True):
    """[Violation] of TensorRT's explicit-quantization rules (see the module docstring) in an ONNX model
    (a ModelProto or a path); an empty list means the Q/DQ placement is one TensorRT builds as intended."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(model)
    g = _Graph(model.graph)
    out = []

    def add(rule, node, msg):
        out.append(Violation(rule, node if isinstance(node, str) else _label(node), msg))

    opset = _opset(model)
    if opset is None or opset < 13:
        add("opset", "<model>", f"default opset {opset}; per-channel Q/DQ needs opset >= 13")

    scale_of = {}  # Q/DQ node output -> (scale array or None)
    for n in g.nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale_of[n.output[0]] = _check_qdq(g, n, add, allow_uint8, opset)
    for n in g.nodes:
        if n.op_type in _WEIGHTED:
            _check_weighted(g, n, add, allow_float_layers)
        elif n.op_type == "Concat":
            _check_shared_scale(g, n, list(n.input), "concat-scale", add, scale_of, need_output_q=False)
        elif n.op_type == "MaxPool":
            _check_shared_scale(g, n, [n.input[0]], "maxpool-scale", add, scale_of, need_output_q=True)
        elif n.op_type == "Add":
            _check_residual_add(g, n, add)
    return out


def _weighted_producer(g, name):
    """The quantized Conv/ConvTranspose/Gemm/MatMul a tensor comes from through pointwise ops, or None."""
    for _ in range(16):
        p = g.producer.get(name)
        if p is None:
            return None
        if p.op_type in _WEIGHTED:
            return p if all(_dq_fed(g, x) for x in p.input[:2]) else None
        if p.op_type in _POINTWISE:
            name = p.input[0]
        elif p.op_type == "Mul" and len(p.input) == 2:  # SiLU: x * Sigmoid(x)
            sig = [g.producer.get(x) for x in p.input]
            for i, s in enumerate(sig):
                if s is not None and s.op_type == "Sigmoid" and s.input[0] == p.input[1 - i]:
                    name = p.input[1 - i]
                    break
            else:
                return None
        else:
            return None
    return None


def _check_residual_add(g, n, add):
    if len(n.input) != 2:
        return
    mains = [_weighted_producer(g, x) for x in n.input]
    if not any(mains):
        return
    skip_ok = [_dq_fed(g, x) or g.is_constant(x) for x in n.input]
    if any(skip_ok[i] and mains[1 - i] is not None for i in (0, 1)):
        return
    main = next(m for m in mains if m is not None)
    others = [x for x, m in zip(n.input, mains) if m is None] or [n.input[1]]
    add("residual-add", n, f"Add reads {main.op_type} {_label(main)} and the float skip input {others[0]!r}; "
        "quantize the skip operand (torchqat.share_scales with example_inputs adds its quantizer) so TensorRT "
        "fuses the layer with the Add")


def _is_weight_q(g, n):
    """A Q/DQ on a weight: Q reading a constant, or DQ reading a constant or such a Q."""
    x = n.input[0]
    if g.is_constant(x):
        return True
    p = g.producer.get(x)
    return n.op_type == "DequantizeLinear" and p is not None and p.op_type == "QuantizeLinear" \
        and g.is_constant(p.input[0])


def _weight_rank(g, n):
    x = n.input[0]
    p = g.producer.get(x)
    if not g.is_constant(x) and p is not None and p.op_type == "QuantizeLinear":
        x = p.input[0]
    v = g.value(x)
    return None if v is None else v.ndim


def _weight_consumers(g, n):
    """(consumer node, input index) of the weight this Q/DQ quantizes (following Q -> DQ)."""
    dqs = [n] if n.op_type == "DequantizeLinear" else g.readers(n.output[0], "DequantizeLinear")
    return [(c, list(c.input).index(dq.output[0])) for dq in dqs for c in g.consumers.get(dq.output[0], [])]


def _expected_axis(node, index, rank):
    if index != 1:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    if node.op_type == "MatMul" and rank:
        return rank - 1
    return None


def _check_qdq(g, n, add, allow_uint8, opset=None):
    what = "QuantizeLinear" if n.op_type == "QuantizeLinear" else "DequantizeLinear"
    scale_name = n.input[1] if len(n.input) > 1 else ""
    scale = g.value(scale_name)
    if scale is None:
        add("constant-scale", n, f"{what} scale {scale_name!r} is not an initializer or Constant "
            "(export with constant folding)")
    else:
        if g.through_identity(scale_name)[1]:
            add("identity-scale", n, f"scale {scale_name!r} comes through Identity from "
                f"{g.through_identity(scale_name)[0]!r}; TensorRT's parser wants the initializer itself "
                "(torchqat.onnx.clean(model) rewires it)")
        if scale.dtype != np.float32:
            add("scale-value", n, f"scale dtype is {scale.dtype}, TensorRT wants float32")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            add("scale-value", n, f"scale must be finite and > 0, got {scale.flatten()[:8].tolist()}")
        block = _attr(n, "block_size", 0)
        if scale.ndim > 1 and not block:
            add("scale-value", n, f"scale must be a scalar or 1-d, got shape {list(scale.shape)}")
        if block:  # opset 21's blocked Q/DQ: TensorRT takes it on 2-d weights only
            if opset is not None and opset < 21:
                add("opset", n, f"{what} with block_size needs opset >= 21, the model has {opset}")
            if not _is_weight_q(g, n):
                add("block", n, f"blocked {what} on an activation; TensorRT's block quantization is weight-only")
            if scale.ndim != 2:
                add("block", n, f"a blocked scale must be 2-d ([out, in / block_size]), got shape {list(scale.shape)}")
    zp_name = n.input[2] if len(n.input) > 2 else ""
    zp = np.array(0, dtype=np.uint8) if not zp_name else g.value(zp_name)
    if zp is None:
        add("constant-scale", n, f"{what} zero point {zp_name!r} is not an initializer or Constant")
    else:
        allowed = ("int8", "uint8") if allow_uint8 else ("int8",)
        allowed += tuple(_EXTRA_ZP_OPSET)
        zp_type = np.dtype(zp.dtype).name
        if zp_type not in allowed:
            add("zero-point", n, f"zero point dtype {zp.dtype}"
                + (" (no zero point input means uint8)" if not zp_name else "")
                + f"; TensorRT wants {' or '.join(allowed)}")
        if zp_type in ("int4", "uint4") and not _is_weight_q(g, n):
            add("zero-point", n, f"{zp_type} {what} on an activation; TensorRT quantizes only weights to INT4")
        need = _EXTRA_ZP_OPSET.get(zp_type)
        if need is not None and opset is not None and opset < need:
            add("opset", n, f"{what} with a {zp_type} zero point needs opset >= {need}, the model has {opset}")
        if np.any(zp != 0):
            add("symmetric", n, f"zero point is not all 0 ({zp.flatten()[:8].tolist()}): TensorRT only supports "
                "symmetric quantization")
        if scale is not None and zp.shape != scale.shape and zp.size != scale.size:
            add("zero-point", n, f"zero point shape {list(zp.shape)} differs from the scale's {list(scale.shape)}")

    # Pairing.
    if n.op_type == "QuantizeLinear":
        for c in g.consumers.get(n.output[0], []):
            if c.op_type != "DequantizeLinear":
                add("qdq-pair", n, f"QuantizeLinear output feeds {c.op_type} {_label(c)}, not a DequantizeLinear")
                continue
            c_scale = g.value(c.input[1]) if len(c.input) > 1 else None
            c_zp_name = c.input[2] if len(c.input) > 2 else ""
            c_zp = np.array(0, dtype=np.uint8) if not c_zp_name else g.value(c_zp_name)
            same = (scale is not None and c_scale is not None and scale.shape == c_scale.shape
                    and np.array_equal(scale, c_scale) and zp is not None and c_zp is not None
                    and zp.dtype == c_zp.dtype and np.array_equal(zp, c_zp)
                    and (scale.ndim == 0 or _attr(n, "axis", 1) == _attr(c, "axis", 1)))
            if not same:
                add("qdq-pair", n, f"its DequantizeLinear {_label(c)} uses a different scale, zero point or axis")
    else:
        p = g.producer.get(n.input[0])
        if not g.is_constant(n.input[0]) and (p is None or p.op_type != "QuantizeLinear"):
            add("qdq-pair", n, f"DequantizeLinear reads {n.input[0]!r} "
                f"({p.op_type if p is not None else 'a graph input'}), not a QuantizeLinear or an int8 constant")

    # Granularity and axis.
    if scale is not None and scale.ndim == 1:
        if not _is_weight_q(g, n):
            add("per-tensor-activation", n, f"per-channel {what} (axis {_attr(n, 'axis', 1)}) on an activation; "
                "TensorRT quantizes activations per tensor")
        else:
            rank = _weight_rank(g, n)
            axis = _attr(n, "axis", 1)
            if rank:
                axis %= rank
            for c, idx in _weight_consumers(g, n):
                want = _expected_axis(c, idx, rank)
                if want is not None and want != axis:
                    add("weight-axis", n, f"per-channel axis {axis} on the weight of {c.op_type} {_label(c)}; "
                        f"its output channels are axis {want}")
    return scale


def _dq_fed(g, name):
    """Whether a tensor comes from a DequantizeLinear, looking through shape-only ops."""
    for _ in range(16):
        p = g.producer.get(name)
        if p is None:
            return False
        if p.op_type == "DequantizeLinear":
            return True
        if p.op_type not in _SHAPE_ONLY:
            return False
        name = p.input[0]
    return False


def _check_weighted(g, n, add, allow_float_layers):
    data = list(n.input[:2])
    fed = [_dq_fed(g, name) for name in data]
    if any(fed) and not all(fed):
        missing = [f"input {i} ({name})" for i, (name, ok) in enumerate(zip(data, fed)) if not ok]
        add("quantized-inputs", n, f"{n.op_type} has Q/DQ on some data inputs but not on {', '.join(missing)}; "
            "TensorRT needs both the input and the weight quantized to run it in int8")
    elif not any(fed) and not allow_float_layers:
        add("quantized-inputs", n, f"{n.op_type} has no Q/DQ on its inputs (a float layer)")


def _check_shared_scale(g, n, inputs, rule, add, scale_of, need_output_q):
    out_q = [q for o in n.output for q in g.readers(o, "QuantizeLinear")]
    if need_output_q and not out_q:
        return
    seen = []  # (scale, description)
    for q in out_q:
        seen.append((scale_of.get(q.output[0]), f"Q {_label(q)} on the output"))
    for name in inputs:
        for q in g.readers(name, "QuantizeLinear"):
            seen.append((scale_of.get(q.output[0]), f"Q {_label(q)} on input {name}"))
        p = g.producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear":
            seen.append((scale_of.get(p.output[0]), f"DQ {_label(p)} producing input {name}"))
    seen = [(s, d) for s, d in seen if s is not None]
    distinct = []
    for s, d in seen:
        if not any(s.shape == t.shape and np.array_equal(s, t) for t, _ in distinct):
            distinct.append((s, d))
    if len(distinct) > 1:
        listing = "; ".join(f"{d}: {s.flatten()[:1].tolist()[0]:.6g}" for s, d in distinct[:6])
        what = "Concat" if rule == "concat-scale" else "MaxPool"
        add(rule, n, f"{len(distinct)} different scales around the {what} ({listing}); share one scale "
            "(torchqat.placement.share_scales)")
