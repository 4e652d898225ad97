"""The C++ flow (torchqat::calibrate, torchqat::fold_bn, tools::FeatureDistillationLoss,
torchqat::share_scales) equals the Python one on the same model and data.

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
from torch import nn

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
    return result, state, out


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
    result, state, _ = cpp_flow
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
    result, state, _ = cpp_flow
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


def test_feature_distillation_loss_is_the_same_in_python_and_cpp(cpp_flow):
    result, state, _ = cpp_flow
    model = _python_model(state)
    torchqat.calibrate(model, _batches(result), method="mse", num_batches=4, percentile=99.9, progress=False)
    model.eval()
    layers = ["stem", "branch.*", "add", "pool", "cat", "fc"]  # flow_tool.cpp's kDistillLayers
    for reduction in ("sum", "mean"):
        with torchqat.tools.FeatureDistillationLoss(model, layers=layers, reduction=reduction) as loss_fn:
            assert loss_fn.layers == ["stem", "branch.0", "branch.0._input_quantizer", "branch.0._weight_quantizer",
                                      "branch.1", "branch.2", "add", "pool", "cat", "fc"]
            loss = loss_fn(result["batch0"])
        cpp = result[f"distill/{reduction}"]
        assert float(loss) > 0
        assert torch.allclose(loss.detach(), cpp, rtol=1e-6, atol=0), (reduction, loss, cpp)
    assert torch.allclose(result["distill/mean"] * 10, result["distill/sum"], rtol=1e-6, atol=0)


def _conv_bn_act(c1, c2, k, s=1):
    return nn.Sequential(quant_nn.QuantConv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


class YoloBlock(nn.Module):
    """tests/cpp/yolo_block.h, module for module and name for name."""

    def __init__(self):
        super().__init__()
        self.cv1, self.cv2, self.cv3 = _conv_bn_act(3, 8, 1), _conv_bn_act(3, 8, 1), _conv_bn_act(8, 8, 3)
        self.out = _conv_bn_act(24, 16, 1)
        self.pool = quant_nn.QuantMaxPool2d(2)
        self.mp1, self.mp2, self.mp3 = _conv_bn_act(16, 8, 1), _conv_bn_act(16, 8, 1), _conv_bn_act(8, 8, 3, 2)
        self.cat = quant_nn.QuantConcat(dim=1)
        self.res = _conv_bn_act(16, 16, 3)
        self.add = quant_nn.QuantAdd(share_quantizer=False)
        self.head = quant_nn.QuantConv2d(16, 4, 1)

    def forward(self, x):
        a, b = self.cv1(x), self.cv2(x)
        y = self.out(torch.cat([a, b, self.cv3(b)], 1))
        z = self.cat([self.mp1(self.pool(y)), self.mp3(self.mp2(y))])
        return self.head(self.add(z, self.res(z)))


def test_share_scales_finds_the_same_groups_in_python_and_cpp(cpp_flow):
    _, _, out = cpp_flow
    cpp = []
    for line in (out / "share_scales.txt").read_text().splitlines():
        major, members, rules = line.split("|")
        cpp.append((major, members.split(","), tuple(rules.split("+"))))
    model = YoloBlock().eval()
    report = torchqat.share_scales(model, torch.randn(1, 3, 16, 16), rules=("concat", "maxpool", "add"))
    python = [(g.major, g.members, g.rules) for g in report.groups]
    assert len(cpp) == 3  # concat, MaxPool branch, residual add
    assert python == cpp
    assert model.add._input1_quantizer is model.cat._input_quantizer
