"""The C++ exporter (torchqat::onnx::export_model) checked with Python's tools: onnx's full checker,
TensorRT lint, and ONNX Runtime against the same model built from torchqat.nn modules carrying the
C++ checkpoint's weights and amaxes.

tests/cpp/export_tool.cpp writes the files; it is found in TORCHQAT_BUILD_DIR (default: ../../build
from this file) under tests/cpp/; scripts/build.sh builds it, and the tests fail when it is missing.
"""
import os
import pathlib
import subprocess

import onnx
import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat.tensor_quant import QuantDescriptor

import ort_check

_HERE = pathlib.Path(__file__).resolve().parent
_BUILD_DIR = pathlib.Path(os.environ.get("TORCHQAT_BUILD_DIR", _HERE / ".." / ".." / "build"))
_TOOL = _BUILD_DIR / "tests" / "cpp" / "torchqat_export_tool"


W4 = QuantDescriptor(num_bits=4, axis=(0,))


class TinyResNet(nn.Module):
    """tests/cpp/onnx_test_model.h, module for module and name for name; weight_desc: the three
    weight quantizers' descriptor (None: the layers' default, 8-bit per channel)."""

    def __init__(self, weight_desc=None):
        super().__init__()
        w = {} if weight_desc is None else {"quant_desc_weight": weight_desc}
        self.stem = nn.Sequential(quant_nn.QuantConv2d(3, 8, 3, padding=1, bias=False, **w), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.branch = nn.Sequential(quant_nn.QuantConv2d(8, 8, 3, padding=1, **w), nn.BatchNorm2d(8), nn.SiLU())
        self.add = quant_nn.QuantAdd()
        self.pool = quant_nn.QuantMaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.cat = quant_nn.QuantConcat(dim=1)
        self.gap = quant_nn.QuantAdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = quant_nn.QuantLinear(16, 10, **w)

    def forward(self, x):
        x = self.stem(x)
        y = self.add(x, self.branch(x))
        u = self.up(self.pool(y))
        return self.fc(self.flatten(self.gap(self.cat([y, u]))))


def _run_tool(tmp_path_factory, *args):
    # scripts/build.sh builds it with the C++ tests: a missing tool is a broken build, not a skip.
    assert _TOOL.exists(), (f"{_TOOL} is not built: run scripts/build.sh, or set TORCHQAT_BUILD_DIR "
                            "to a build with TORCHQAT_BUILD_TESTS=ON")
    out = tmp_path_factory.mktemp("cpp_export")
    subprocess.run([str(_TOOL), str(out), *args], check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _run_tool(tmp_path_factory)


@pytest.fixture(scope="module")
def exported_w4(tmp_path_factory):
    """The same model with 4-bit per-channel weights (C++ QuantDescriptor().num_bits(4).axis({0}))."""
    return _run_tool(tmp_path_factory, "w4")


def _python_model(checkpoint, weight_desc=None):
    """TinyResNet with the C++ checkpoint's parameters, buffers and amaxes (torch::save writes a
    TorchScript archive whose names are the module's)."""
    archive = torch.jit.load(str(checkpoint), map_location="cpu")
    state = dict(archive.named_parameters())
    state.update(dict(archive.named_buffers()))
    model = TinyResNet(weight_desc)
    for key, value in state.items():
        if key.endswith("._amax"):
            model.get_submodule(key[: -len("._amax")]).amax = value
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    # The shared quantizer of QuantAdd appears under both its names in Python, once in C++.
    assert set(missing) <= {"add._input1_quantizer._amax"}, missing
    return model.eval()


def test_cpp_export_passes_the_full_checker_and_tensorrt_lint(exported):
    model = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 7
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert torchqat.onnx.lint_tensorrt(model) == []
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 12


def test_cpp_checkpoint_loads_into_the_python_modules_and_matches_cpp(exported):
    model = _python_model(exported / "model.pt")
    x, y_cpp = torch.load(str(exported / "io.pt"), weights_only=True)
    with torch.no_grad():
        y_py = model(x)
    # Same kernels behind both (torch.ops.torchqat.fake_quant and aten): equal up to summation order.
    torch.testing.assert_close(y_py, y_cpp, rtol=1e-5, atol=1e-5)


def test_onnx_runtime_matches_torchqat_fake_quant(exported):
    model = _python_model(exported / "model.pt")
    sess = ort_check.session(exported / "model.onnx")
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    torch.manual_seed(1)
    for batch in (1, 5):  # exported with batch 2 and a dynamic batch
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            want = model(x).numpy()
        # One output step everywhere, 1e-6 in 90 % of the outputs: ort_check.py says why.
        ort_check.assert_matches(sess.run(None, {"images": x.numpy()}), [want])


def test_a_cpp_exported_scale_one_percent_off_fails_the_comparison(exported):
    """The mutation check of the comparison above, on the C++ exporter's graph: every activation
    scale in turn, and one weight scale, times 1.01."""
    model = _python_model(exported / "model.pt")
    proto = onnx.load(str(exported / "model.onnx"))
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = [model(x).numpy()]
    ort_check.assert_matches(ort_check.session(proto).run(None, {"images": x.numpy()}), want)
    names = ort_check.activation_scales(proto)
    assert len(names) >= 5
    inits = {t.name for t in proto.graph.initializer}
    names.append(next(n.input[1] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits))
    for name in names:
        with pytest.raises(AssertionError):
            ort_check.assert_matches(ort_check.session(ort_check.with_scale(proto, name, 1.01)).run(
                None, {"images": x.numpy()}), want)


def test_cpp_int4_export_runs_in_onnx_runtime_like_the_fake_quant_model(exported_w4):
    """C++ export_model of 4-bit weights: opset 21, INT4 zero points on the fp32 weight initializers
    (the quantizers are not folded into the weights), and ONNX Runtime equal to torchqat's Python
    modules carrying the same weights and amaxes within one output step (ort_check.py)."""
    proto = onnx.load(str(exported_w4 / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 10 and [(o.domain, o.version) for o in proto.opset_import] == [("", 21)]
    assert torchqat.onnx.lint_tensorrt(proto) == []
    inits = {t.name: t for t in proto.graph.initializer}
    zp_types = {n.input[0]: inits[n.input[2]].data_type for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    for weight in ("stem.0.weight", "branch.0.weight", "fc.weight"):
        assert inits[weight].data_type == onnx.TensorProto.FLOAT
        assert zp_types.pop(weight) == onnx.TensorProto.INT4, weight
    assert zp_types and set(zp_types.values()) == {onnx.TensorProto.INT8}  # the activations stay int8

    model = _python_model(exported_w4 / "model.pt", W4)
    x, y_cpp = torch.load(str(exported_w4 / "io.pt"), weights_only=True)
    with torch.no_grad():
        y_py = model(x)
    torch.testing.assert_close(y_py, y_cpp, rtol=1e-5, atol=1e-5)
    # The scales are the Python quantizers' amax / 7.
    scale = onnx.numpy_helper.to_array(inits[next(n.input[1] for n in proto.graph.node
                                                  if n.op_type == "QuantizeLinear" and n.input[0] == "fc.weight")])
    assert (scale == model.fc._weight_quantizer.amax.flatten().numpy() / 7).all()
    sess = ort_check.session(proto)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model(x).numpy()
        ort_check.assert_matches(sess.run(None, {"images": x.numpy()}), [want])
