"""The C++ flow (torchqat::calibrate, torchqat::fold_bn) equals the Python one on the same model and data.

tests/cpp/flow_tool.cpp calibrates the ONNX test model with each method and folds its BNs; here
torchqat.calibrate and torchqat.fold_bn run on the same weights (the TinyResNet of
test_onnx_cpp_export.py, module for module) and the same batches, and every amax, weight and bias
must be equal. The tool is found in TORCHQAT_BUILD_DIR (default ../../build) under tests/cpp/;
scripts/build.sh builds it, and the tests fail when it is missing.
"""
import os
import pathlib
import subprocess

import pytest
import torch

import torchqat
from torchqat import nn as quant_nn

from test_onnx_cpp_export import TinyResNet

_HERE = pathlib.Path(__file__).resolve().parent
_BUILD_DIR = pathlib.Path(os.environ.get("TORCHQAT_BUILD_DIR", _HERE / ".." / ".." / "build"))
_TOOL = _BUILD_DIR / "tests" / "cpp" / "torchqat_flow_tool"
_METHODS = ("max", "entropy", "percentile", "mse", "auto")


@pytest.fixture(scope="module")
def cpp_flow(tmp_path_factory):
    assert _TOOL.exists(), (f"{_TOOL} is not built: run scripts/build.sh, or set TORCHQAT_BUILD_DIR "
                            "to a build with TORCHQAT_BUILD_TESTS=ON")
    out = tmp_path_factory.mktemp("cpp_flow")
    subprocess.run([str(_TOOL), str(out)], check=True, capture_output=True, timeout=300)
    result = torch.load(out / "flow.pt", weights_only=False)
    archive = torch.jit.load(str(out / "model.pt"), map_location="cpu")
    state = dict(archive.named_parameters())
    state.update(dict(archive.named_buffers()))
    return result, state


def _python_model(state):
    model = TinyResNet()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith("._amax") for k in missing), missing  # nothing calibrated yet
    return model


def _batches(result):
    return [result[f"batch{i}"] for i in range(5)]


def _quantizer_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, quant_nn.TensorQuantizer)]


def test_calibrate_gives_the_same_amax_in_python_and_cpp(cpp_flow):
    result, state = cpp_flow
    model = _python_model(state)
    names = _quantizer_names(model)
    for method in _METHODS:
        torchqat.calibrate(model, _batches(result), method=method, num_batches=4, percentile=99.9, progress=False)
        for name in names:
            if name == "add._input1_quantizer":  # the shared quantizer, listed once in C++
                continue
            cpp = result[f"{method}/{name}"]
            py = model.get_submodule(name).amax
            assert py.shape == cpp.shape, (method, name)
            assert torch.equal(py, cpp), (method, name, py, cpp)
    # The methods really differ on this data, so the comparison above is not trivially satisfied.
    first = "stem.0._input_quantizer"
    assert len({float(result[f"{m}/{first}"]) for m in _METHODS if m != "auto"}) == len(_METHODS) - 1


def test_fold_bn_gives_the_same_weights_and_amax_in_python_and_cpp(cpp_flow):
    result, state = cpp_flow
    model = _python_model(state)
    torchqat.calibrate(model, _batches(result), method="mse", num_batches=4, percentile=99.9, progress=False)
    torchqat.fold_bn(model)
    assert isinstance(model.stem[1], torch.nn.Identity) and isinstance(model.branch[1], torch.nn.Identity)
    folded = {k[len("folded/"):]: v for k, v in result.items() if k.startswith("folded/")}
    params = dict(model.named_parameters())
    for key, cpp in folded.items():
        if key.endswith("._amax"):
            py = model.get_submodule(key[: -len("._amax")]).amax
        else:
            py = params[key].detach()
        assert torch.equal(py, cpp), key
    assert "stem.0.bias" in folded  # the bias-free conv got its bias in both
    assert set(params) == {k for k in folded if not k.endswith("._amax")}
