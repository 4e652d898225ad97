"""docs/errors.md drives this test: every row tested in py has a case here (keyed by its id) that
must raise the documented type with the documented message fragment, and every case has a row."""
import builtins
import io
import pathlib
import re
import warnings

import pytest
import torch
from torch import nn

import torchqat
from torchqat import calib
from torchqat import nn as qnn
from torchqat.tensor_quant import QuantDescriptor

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _rows():
    """{id: (langs, cuda, python type, fragment)} from the doc's tables."""
    rows = {}
    for line in DOC.read_text().splitlines():
        if not re.match(r"\|\s*E\d+\s*\|", line):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 7, f"errors.md: a row needs 7 cells: {line}"
        rid, tested, _, _, py_type, cpp_type, frag = cells
        assert rid not in rows, f"errors.md: duplicate id {rid}"
        langs = tested.split()
        assert langs[0] in ("py", "cpp", "both") and langs[1:] in ([], ["cuda"]), f"{rid}: bad 'tested in' {tested!r}"
        assert (py_type != "—") == (langs[0] in ("py", "both")), f"{rid}: Python type vs 'tested in'"
        assert (cpp_type != "—") == (langs[0] in ("cpp", "both")), f"{rid}: C++ type vs 'tested in'"
        assert frag.startswith("`") and frag.endswith("`"), f"{rid}: fragment must be in backticks"
        rows[rid] = (langs[0], "cuda" in langs, py_type, frag[1:-1])
    return rows


ROWS = _rows()
PY_ROWS = sorted((r for r, v in ROWS.items() if v[0] in ("py", "both")), key=lambda r: int(r[1:]))

op = torch.ops.torchqat
X = torch.randn(4, 3)


def _fq(x=X, amax=torch.tensor(1.0), bits=8, axis=None):
    return op.fake_quant(x, amax, bits, False, False, axis)


def _blocked_linear(calibrated=True):
    """A QuantLinear(16, 4) with a 4-bit weight quantizer blocked by 4 along its input dim."""
    m = qnn.QuantLinear(16, 4, quant_desc_weight=QuantDescriptor(num_bits=4, axis=(0,), block_size=4)).eval()
    if calibrated:
        m._input_quantizer.amax = 1.0
        m._weight_quantizer.amax = op.abs_max_blocked(m.weight.detach(), 4)
    return m


def _collected(cal, x=X):
    cal.collect(x)
    return cal


def _fp8_linear():
    """A calibrated QuantLinear with FP8 E4M3 quantizers."""
    fp8 = QuantDescriptor(num_bits=(4, 3))
    m = qnn.QuantLinear(2, 2, quant_desc_input=fp8, quant_desc_weight=fp8).eval()
    m._input_quantizer.amax = 1.0
    m._weight_quantizer.amax = 1.0
    return nn.Sequential(m)


def _w4_linear(act=False):
    """A calibrated QuantLinear with a 4-bit weight quantizer (and a 4-bit input quantizer with act)."""
    m = qnn.QuantLinear(2, 2, quant_desc_input=QuantDescriptor(num_bits=4 if act else 8),
                        quant_desc_weight=QuantDescriptor(num_bits=4, axis=(0,))).eval()
    m._input_quantizer.amax = 1.0
    m._weight_quantizer.amax = torch.ones(2, 1)
    return nn.Sequential(m)


def _export_enabled(model, opset):
    with torchqat.enable_onnx_export():
        torch.onnx.export(model, (torch.ones(1, 2),), io.BytesIO(), opset_version=opset, dynamo=False)


def _export_blocked_enabled(model):
    with torchqat.enable_onnx_export():
        torch.onnx.export(model, (torch.ones(1, 16),), io.BytesIO(), opset_version=20, dynamo=False)


def _quantizer_with(**desc):
    return qnn.TensorQuantizer(QuantDescriptor(**desc))


def _set_amax_twice():
    q = qnn.TensorQuantizer()
    q.amax = 1.0
    q.amax = [1.0, 2.0]


def _calib_strict():
    q = qnn.TensorQuantizer()
    q.enable_calib()
    q.load_calib_amax()


def _max_shape_change():
    c = calib.MaxCalibrator(8, 0)
    c.collect(torch.randn(4, 3))
    c.collect(torch.randn(5, 3))


def _multi_axis_conv():
    """A conv whose weight amax varies along dims 0 and 1 (calibrated: [4, 3, 1, 1])."""
    m = nn.Sequential(qnn.QuantConv2d(3, 4, 1, quant_desc_weight=QuantDescriptor(axis=(0, 1))))
    m[0]._input_quantizer.amax = 1.0
    m[0]._weight_quantizer.amax = m[0].weight.detach().abs().amax(dim=(2, 3), keepdim=True)
    return m


def _linear_model():
    return nn.Sequential(nn.Linear(2, 2))


def _qmodel():
    return nn.Sequential(qnn.QuantLinear(3, 2))


def _conv():
    return qnn.QuantConv2d(3, 4, 3)


def _checkpoint_file(tmp_path, data):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(data)
    return str(path)


def _saved_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load_with(key, value, model=None):
    model = model or _conv()
    sd = model.state_dict()
    sd[key] = value
    torchqat.load_state_dict(model, sd)


def _pre_quant_scale_twice(*values):
    q = qnn.TensorQuantizer()
    for v in values:
        q.pre_quant_scale = v


# id -> callable(tmp_path). Each must raise (or warn) as its row says.
def _int8_constant_graph():
    from onnx import TensorProto, helper
    w = helper.make_tensor("w", TensorProto.INT8, [1], [3])
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    g = helper.make_graph([helper.make_node("DequantizeLinear", ["w", "s"], ["y"], name="dq")], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [w, s])
    return helper.make_model(g)


CASES = {
    "E01": lambda t: _fq(x=torch.ones(3, dtype=torch.int32)),
    "E02": lambda t: _fq(amax=torch.tensor(1)),
    "E03": lambda t: _fq(amax=torch.tensor(-1.0)),
    "E04": lambda t: _fq(amax=torch.tensor(float("nan"))),
    "E05": lambda t: _fq(amax=torch.tensor(float("inf"))),
    "E06": lambda t: _fq(bits=1),
    "E07": lambda t: _fq(bits=17),
    "E08": lambda t: _fq(amax=torch.ones(3), axis=5),
    "E09": lambda t: _fq(amax=torch.ones(5), axis=1),
    "E10": lambda t: _fq(amax=torch.ones(4, 1, 1)),
    "E250": lambda t: _fq(amax=torch.ones(4, 2)),
    "E254": lambda t: calib.HistogramCalibrator(8, None, False, torch_hist=False).collect(torch.tensor([1.0, float("nan")])),
    "E255": lambda t: calib.HistogramCalibrator(8, None, False, skip_zeros=True, torch_hist=False).collect(torch.zeros(4)),
    "E251": lambda t: torchqat.onnx.export(_multi_axis_conv(), (torch.randn(1, 3, 4, 4),), io.BytesIO()),
    "E253": lambda t: torch.onnx.export(_multi_axis_conv(), (torch.randn(1, 3, 4, 4),), io.BytesIO(), dynamo=False,
                                        opset_version=13),
    "E12": lambda t: _fq(x=X.cuda()),
    "E13": lambda t: op.quantize(X, torch.tensor(1.0), 20, False, False, None),
    "E14": lambda t: op.quantize(X, torch.tensor(float("nan")), 8, False, False, None),
    "E15": lambda t: op.dequantize(torch.ones(3), torch.tensor(1.0), None, None),
    "E16": lambda t: op.abs_max(torch.empty(0), []),
    "E17": lambda t: op.abs_max(torch.tensor([1.0, float("nan")]), []),
    "E18": lambda t: op.abs_max(torch.tensor([1.0, float("inf")]), []),
    "E19": lambda t: op.abs_max(X, [3]),
    "E20": lambda t: op.abs_max(torch.ones(3, dtype=torch.int32), []),
    "E21": lambda t: op.histogram_abs(X, torch.zeros(4), 1.0, False),
    "E22": lambda t: op.histogram_abs(X, torch.zeros(2, 2, dtype=torch.long), 1.0, False),
    "E23": lambda t: op.histogram_abs(X, torch.zeros(4, dtype=torch.long), 0.0, False),
    "E24": lambda t: op.histogram_abs(X.cuda(), torch.zeros(4, dtype=torch.long), 1.0, False),
    "E25": lambda t: QuantDescriptor(num_bits=1),
    "E26": lambda t: QuantDescriptor(num_bits="8"),
    "E27": lambda t: QuantDescriptor(amax=-1.0),
    "E28": lambda t: QuantDescriptor(amax=float("nan")),
    "E29": lambda t: QuantDescriptor(calib_method="kl"),
    "E30": lambda t: QuantDescriptor(scale_amax=0.0),
    "E31": lambda t: QuantDescriptor(foo=1),
    "E32": lambda t: QuantDescriptor(axis=(1.5,)),
    "E262": lambda t: QuantDescriptor(num_bits=4, axis=(0,), block_size="4"),
    "E263": lambda t: QuantDescriptor(num_bits=4, axis=(0,), block_size=0),
    "E264": lambda t: QuantDescriptor(num_bits=(4, 3), axis=(0,), block_size=16),
    "E265": lambda t: QuantDescriptor(num_bits=4, block_size=16),
    "E266": lambda t: QuantDescriptor(num_bits=4, axis=(0,), block_size=16, calib_method="histogram"),
    "E267": lambda t: op.fake_quant_blocked(torch.randn(2, 3, 4), torch.ones(2, 3, 1), 4),
    "E268": lambda t: op.abs_max_blocked(torch.randn(4, 16), 5),
    "E269": lambda t: op.fake_quant_blocked(torch.randn(4, 16), torch.ones(4, 2), 4),
    "E320": lambda t: torchqat.onnx.export(_blocked_linear(calibrated=False), torch.randn(2, 16), str(t / "m.onnx")),
    "E321": lambda t: torchqat.onnx.export(_blocked_linear(), torch.randn(2, 16), str(t / "m.onnx"), dynamo=True),
    "E322": lambda t: torchqat.onnx.export(_blocked_linear(), torch.randn(2, 16), str(t / "m.onnx"), opset_version=19),
    "E323": lambda t: _export_blocked_enabled(_blocked_linear()),
    "E324": lambda t: torchqat.calib.calibrate_weights(_blocked_linear(calibrated=False), method="mse"),
    "E290": lambda t: QuantDescriptor(axis=(0,), learn_amax=True),
    "E291": lambda t: qnn.QuantConv2d(2, 3, 3, descriptor=QuantDescriptor()),
    "E292": lambda t: torchqat.tensor_quant.fake_affine_tensor_quant(X, 1.0, 0.0),
    "E293": lambda t: op.fake_affine_quant(X, torch.tensor(float("nan")), torch.tensor(1.0)),
    "E294": lambda t: op.fake_affine_quant(torch.randn(2, 3), torch.zeros(4), torch.tensor(1.0)),
    "E34": lambda t: setattr(qnn.TensorQuantizer(), "amax", -1.0),
    "E35": lambda t: setattr(qnn.TensorQuantizer(), "amax", float("nan")),
    "E37": lambda t: _set_amax_twice(),
    "E39": lambda t: _quantizer_with(axis=3, amax=[1.0, 2.0])(X),
    "E40": lambda t: _calib_strict(),
    "E44": lambda t: qnn.TensorQuantizer(8),
    "E46": lambda t: setattr(qnn.TensorQuantizer(), "num_bits", 20),
    "E47": lambda t: qnn.TensorQuantizer().enable_clip(),
    "E197": lambda t: qnn.TensorQuantizer(if_clip=True),
    "E198": lambda t: _pre_quant_scale_twice(torch.ones(3), torch.ones(4)),
    "E199": lambda t: _pre_quant_scale_twice(float("nan")),
    "E200": lambda t: _pre_quant_scale_twice(None),
    "E190": lambda t: op.clip(torch.ones(3, dtype=torch.int32), torch.tensor(0.0), torch.tensor(1.0)),
    "E191": lambda t: op.clip(torch.ones(4, 3, 2), torch.tensor(0), torch.tensor(1.0)),
    "E192": lambda t: op.clip(torch.ones(4, 3, 2), torch.zeros(3), torch.tensor(1.0)),
    "E193": lambda t: op.clip(torch.ones(4, 3, 2), torch.tensor(0.0), torch.ones(2, 4, 3, 2)),
    "E194": lambda t: op.clip_backward(torch.ones(3), torch.ones(4), torch.tensor(0.0), torch.tensor(1.0), True, True),
    "E195": lambda t: qnn.Clip(torch.tensor([-1.0, -2.0]), 1.0, learn_min=True),
    "E196": lambda t: qnn.Clip(-1.0, [1.0, 2.0], learn_max=True),
    "E48": lambda t: qnn.TensorQuantizer().init_learn_amax(),
    "E49": lambda t: _quantizer_with(axis=0, calib_method="histogram").enable_calib(),
    "E51": lambda t: qnn.TensorQuantizer()(torch.empty(0)),
    "E52": lambda t: _max_shape_change(),
    "E53": lambda t: calib.MaxCalibrator(8).collect(torch.tensor([float("nan")])),
    "E54": lambda t: calib.MaxCalibrator(8).collect(torch.tensor([float("inf")])),
    "E55": lambda t: calib.MaxCalibrator(8, 3).collect(X),
    "E56": lambda t: calib.MaxCalibrator(1),
    "E57": lambda t: _collected(calib.HistogramCalibrator()).compute_amax("kl"),
    "E58": lambda t: _collected(calib.HistogramCalibrator()).compute_amax("percentile", percentile=0),
    "E59": lambda t: _collected(calib.HistogramCalibrator()).compute_amax("percentile", percentile=100.5),
    "E60": lambda t: calib.HistogramCalibrator(8, num_bins=64),
    "E61": lambda t: calib.HistogramCalibrator(8, unsigned=True, num_bins=200),
    "E62": lambda t: calib.HistogramCalibrator(8, axis=0),
    "E63": lambda t: _collected(calib.HistogramCalibrator()).compute_amax("entropy", stride=0),
    "E64": lambda t: _collected(calib.HistogramCalibrator()).compute_amax("mse", start_bin=4096),
    "E65": lambda t: calib.HistogramCalibrator().collect(torch.tensor([1.0, float("nan")])),
    "E66": lambda t: calib.HistogramCalibrator().collect(torch.tensor([1.0, float("inf")])),
    "E111": lambda t: calib.HistogramCalibrator().collect(torch.tensor([1.0, 1e39], dtype=torch.float64)),
    "E67": lambda t: calib.HistogramCalibrator().compute_amax("entropy"),
    "E70": lambda t: torchqat.calibrate(_qmodel(), [X], method="kl", progress=False),
    "E71": lambda t: torchqat.calibrate(_qmodel(), [X], num_batches=0, progress=False),
    "E72": lambda t: torchqat.calibrate(nn.Sequential(nn.Linear(3, 2)), [X], progress=False),
    "E73": lambda t: torchqat.calibrate(_qmodel(), [], progress=False),
    "E74": lambda t: torchqat.calibrate(_qmodel(), [torch.full((2, 3), float("nan"))], progress=False),
    "E75": lambda t: torchqat.quantize_model(_linear_model(), custom_quant_modules={"NoSuch": qnn.QuantLinear}),
    "E76": lambda t: torchqat.quantize_model(_linear_model(), quant_desc_weight=QuantDescriptor(axis=3)),
    "E77": lambda t: torchqat.quantize_model(_linear_model(), quant_desc_weight=QuantDescriptor(fake_quant=False)),
    "E79": lambda t: torchqat.quantize_model(_linear_model(), include=["nomatch"]),
    "E80": lambda t: torchqat.quantize_model(_linear_model(), exclude=["nomatch"]),
    "E81": lambda t: torchqat.quantize_model(_linear_model(), {"quant_cfg": {"nomatch*": {"num_bits": 4}}}),
    "E84": lambda t: torchqat.quantize_model(_linear_model(), {"bogus": 1}),
    "E85": lambda t: torchqat.quantize_model(3),
    "E86": lambda t: torchqat.quantize_model(_linear_model(), {"quant_cfg": {1: {}}}),
    "E89": lambda t: qnn.QuantConv2d(3, 4, 3, quant_desc_weight=QuantDescriptor(axis=5)),
    "E90": lambda t: qnn.QuantLinear(3, 4, quant_desc_input=QuantDescriptor(fake_quant=False)),
    "E92": lambda t: qnn.QuantConv2d.from_float(nn.Linear(2, 2)),
    "E93": lambda t: qnn.QuantLinear(3, 4, quant_desc_input=3),
    "E94": lambda t: qnn.QuantConcat()([]),
    "E97": lambda t: torchqat.load_state_dict(_conv(), _checkpoint_file(t, _saved_bytes(_conv().state_dict())[:100])),
    "E98": lambda t: torchqat.load_state_dict(_conv(), _checkpoint_file(t, b"garbage" * 10)),
    "E99": lambda t: torchqat.load_state_dict(_conv(), str(t / "missing.pt")),
    "E100": lambda t: _load_with("_input_quantizer._amax", torch.tensor(float("nan"))),
    "E101": lambda t: _load_with("_input_quantizer._amax", torch.tensor(-1.0)),
    "E102": lambda t: _load_with("weight", torch.zeros(4, 3, 5, 5)),
    "E103": lambda t: _load_with("_weight_quantizer._amax", torch.ones(3, 1, 1, 1)),
    "E104": lambda t: _load_with("_input_quantizer._amax", torch.ones(3)),
    "E105": lambda t: torchqat.load_state_dict(_conv(), {}),
    "E106": lambda t: _load_with("extra", torch.ones(1)),
    "E107": lambda t: _conv().load_state_dict({**_conv().state_dict(), "_input_quantizer._amax": torch.tensor(
        float("nan"))}),
    "E108": lambda t: torchqat.load_state_dict(_conv(), [1]),
    "E130": lambda t: calib.calibrate_auto(_linear_model(), [torch.randn(2, 2)], progress=False, auto_batches=0),
    "E131": lambda t: calib.compute_amax(_linear_model(), method="auto"),
    "E125": lambda t: torchqat.onnx.export_tensorrt_implicit(torchqat.quantize_model(nn.Sequential(nn.Linear(3, 2))),
                                                             (torch.randn(1, 3),), t / "m.onnx", t / "m.cache"),
    "E126": lambda t: torchqat.onnx.write_calibration_cache({"a": 0.0}, t / "c.cache"),
    "E127": lambda t: torchqat.onnx.write_calibration_cache({"a": 1.0}, t / "c.cache", header="two\nlines"),
    "E128": lambda t: torchqat.onnx.write_calibration_cache({"a: b": 1.0}, t / "c.cache"),
    "E129": lambda t: torchqat.onnx.strip_qdq(_int8_constant_graph()),
    "E150": lambda t: torchqat.utils.reduce_amax(torch.zeros(2, 3), axis=(0, 1, 1)),
    "E151": lambda t: torchqat.utils.reduce_amax(torch.zeros(2, 3), axis=2),
    "E152": lambda t: torchqat.utils.reduce_amax([1.0]),
    "E153": lambda t: torchqat.utils.reduce_amax(torch.zeros(2, 3), axis=(1.0,)),
    "E154": lambda t: torchqat.optim.helper.group_parameters(_linear_model(), ["weight"]),
    "E155": lambda t: torchqat.optim.helper.group_parameters(_linear_model(), [["weight"], ["bias"]], lrs=[0.1]),
    "E156": lambda t: torchqat.cuda_ext.fake_tensor_quant(torch.zeros(2), 1.0),
    "E210": lambda t: QuantDescriptor(num_bits=(5, 2)),
    "E211": lambda t: QuantDescriptor(num_bits=(4, 3), unsigned=True),
    "E212": lambda t: op.fake_quant_e4m3(X, torch.tensor(-1.0), None),
    "E213": lambda t: op.fake_quant_e4m3(X.int(), torch.tensor(1.0), None),
    "E214": lambda t: _collected(calib.HistogramCalibrator(num_bits=(4, 3))).compute_amax("entropy"),
    "E215": lambda t: torchqat.tensor_quant.scaled_e4m3(X, 1.0, E=5, M=2),
    "E216": lambda t: torchqat.onnx.export(_fp8_linear(), (torch.ones(1, 2),), io.BytesIO(), opset_version=13),
    "E217": lambda t: torchqat.onnx.export(_fp8_linear(), (torch.ones(1, 2),), io.BytesIO()),
    "E218": lambda t: _export_enabled(_fp8_linear(), 17),
    "E219": lambda t: torchqat.onnx.export(_w4_linear(), (torch.ones(1, 2),), io.BytesIO(), opset_version=19),
    "E220": lambda t: torchqat.onnx.export(_w4_linear(), (torch.ones(1, 2),), io.BytesIO(), dynamo=True),
    "E221": lambda t: torchqat.onnx.export(_w4_linear(act=True), (torch.ones(1, 2),), io.BytesIO()),
    "E222": lambda t: _export_enabled(_w4_linear(), 20),
    "E157": lambda t: torch.onnx.export(nn.Sequential(qnn.QuantLinear(2, 2)).eval(), (torch.ones(1, 2),),
                                        io.BytesIO(), opset_version=13, dynamo=False),
    "E170": lambda t: torchqat.onnx.export(nn.Sequential(qnn.QuantLinear(2, 2)).eval(), (torch.ones(1, 2),),
                                           io.BytesIO(), dynamo=True),
    "E140": lambda t: qnn.QuantLSTM(4, 8, proj_size=2),
    "E141": lambda t: qnn.QuantLSTM(4, 8, dropout=1.5),
    "E142": lambda t: qnn.QuantLSTM(4, 8)(torch.randn(3, 2, 5)),
    "E143": lambda t: qnn.QuantLSTM(4, 8)(torch.randn(3, 2, 4), (torch.zeros(1, 3, 8), torch.zeros(1, 2, 8))),
    "E144": lambda t: qnn.QuantLSTMCell(4, 8)(torch.randn(2, 5)),
    "E145": lambda t: qnn.QuantLSTM.from_float(nn.GRU(4, 8)),
    "E146": lambda t: qnn.QuantInstanceNorm2d.from_float(nn.BatchNorm2d(3)),
}


def test_every_case_has_a_py_row():
    extra = sorted(set(CASES) - set(PY_ROWS))
    assert not extra, f"cases without a py/both row in docs/errors.md: {extra}"


@pytest.mark.parametrize("rid", PY_ROWS)
def test_row(rid, tmp_path):
    _, cuda, py_type, fragment = ROWS[rid]
    assert rid in CASES, f"docs/errors.md row {rid} has no case in test_error_table.py"
    if cuda and not (torch.cuda.is_available() and torchqat.cuda_compiled()):
        pytest.skip("needs a GPU and a CUDA build")
    case = CASES[rid]
    if py_type == "UserWarning":
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            case(tmp_path)
        msgs = [str(m.message) for m in w if issubclass(m.category, UserWarning)]
        assert any(fragment in m for m in msgs), f"{rid}: no UserWarning containing {fragment!r} in {msgs}"
        return
    exc = getattr(builtins, py_type, None)
    assert isinstance(exc, type) and issubclass(exc, BaseException), f"{rid}: unknown Python type {py_type!r}"
    with pytest.raises(BaseException) as info:
        case(tmp_path)
    # Exactly the documented class: RuntimeError rows must not pass on a subclass such as NotImplementedError.
    assert type(info.value) is exc, f"{rid}: raised {type(info.value).__name__}: {info.value}"
    assert fragment in str(info.value), f"{rid}: {fragment!r} not in {str(info.value)!r}"
