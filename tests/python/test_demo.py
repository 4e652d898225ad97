"""`python -m torchqat.demo` in --quick mode: the table, the QDQ ONNX file and the plot."""
import gzip
import os
import subprocess
import sys

import matplotlib  # noqa: F401  (the demo's plot; required, like onnx and onnxruntime)
import numpy as np
import onnx
import onnxruntime  # noqa: F401  (the demo's ONNX Runtime row)
import pytest
import torch

from torchqat.demo import data as demo_data

DATA_DIR = demo_data.DEFAULT_DATA_DIR
needs_data = pytest.mark.skipif(
    not os.path.exists(os.path.join(DATA_DIR, "t10k-labels-idx1-ubyte.gz")),
    reason="needs Debian's dataset-fashion-mnist package")


def _write_idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(str(tmp_path / "a.gz"), a, 0x08)
    np.testing.assert_array_equal(demo_data.read_idx(str(tmp_path / "a.gz")), a)
    b = np.array([1, -2, 300], dtype=np.int32)
    _write_idx(str(tmp_path / "b.gz"), b, 0x0C)
    np.testing.assert_array_equal(demo_data.read_idx(str(tmp_path / "b.gz")), b)


def test_read_idx_rejects_bad_files(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        demo_data.read_idx(str(p))
    p.write_bytes(bytes([0, 0, 8, 1]) + np.asarray([10], ">u4").tobytes() + b"\x00" * 3)  # 3 of 10 bytes
    with pytest.raises(ValueError, match="header says"):
        demo_data.read_idx(str(p))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        demo_data.load_split("train", str(tmp_path))


def test_model_size_and_shapes():
    from torchqat.demo.model import FashionResNet, count_parameters
    m = FashionResNet()
    assert 0.2e6 <= count_parameters(m) <= 0.5e6
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_help_lists_options():
    out = subprocess.run([sys.executable, "-m", "torchqat.demo", "--help"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), timeout=120)
    assert out.returncode == 0, out.stderr
    for opt in ("--epochs", "--qat-epochs", "--device", "--out", "--cache-dir", "--batch-size", "--quick", "--seed"):
        assert opt in out.stdout


@needs_data
def test_quick_run_end_to_end(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    from torchqat import demo
    from torchqat.demo import run

    out_dir, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["--quick", "--out", str(out_dir), "--cache-dir", str(cache), "--device", "cpu", "--no-progress"]
    res = demo.main(argv)
    text = capsys.readouterr().out

    # One table with every row.
    for row in ("FP32 (PyTorch)", "PTQ int8 max", "PTQ int8 entropy", "PTQ int8 percentile", "PTQ int8 mse",
                "QAT int8", "ONNX Runtime int8", "PTQ fp8", "QAT fp8", "ONNX Runtime fp8", "PTQ w4a8", "QAT w4a8",
                "ONNX Runtime w4a8", "ONNX file size", "latency"):
        assert f"| {row}" in text, f"row {row!r} missing from the table:\n{text}"
    assert set(res["ptq"]) >= {"max", "entropy", "percentile", "mse"}
    # --quick trains 16 steps: accuracy is low but above chance (10 %), and quantization must not lose
    # what was learnt. Bounds from the measured quick run (1024 test images, one image = 0.1 point):
    # int8 rows within 0.2-1.6 points of FP32, fp8 within 2.3, w4a8 within 1.2, and each ONNX Runtime
    # row equal to its fake-quant QAT model (0.00 measured for int8, fp8 and w4a8). A wrong scale or a
    # broken quantizer falls to chance, 13 points below.
    assert res["fp32"] > 15.0, res["fp32"]
    for method, acc in res["ptq"].items():
        assert abs(acc - res["fp32"]) <= 4.0, (method, acc, res["fp32"])
    assert abs(res["qat"] - res["fp32"]) <= 4.0, (res["qat"], res["fp32"])
    for key in ("fp8_ptq", "fp8_qat"):
        assert abs(res[key] - res["fp32"]) <= 4.0, (key, res[key], res["fp32"])
    for key in ("w4a8_ptq", "w4a8_qat"):
        assert abs(res[key] - res["fp32"]) <= 6.0, (key, res[key], res["fp32"])
    for ort_key, torch_key in (("ort_int8", "qat"), ("ort_fp8", "fp8_qat"), ("ort_w4a8", "w4a8_qat")):
        assert abs(res[ort_key] - res[torch_key]) <= 0.3, (ort_key, res[ort_key], res[torch_key])  # <= 3 images

    # The FP8 file is opset 19 with FLOAT8E4M3FN zero points, the w4a8 one opset 21 with INT4 weights.
    for key, opset, zp_type in (("onnx_fp8", 19, onnx.TensorProto.FLOAT8E4M3FN),
                                ("onnx_w4a8", 21, onnx.TensorProto.INT4)):
        model = onnx.load(res[key])
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == opset, key
        types = {t.name: t.data_type for t in model.graph.initializer}
        types.update({n.output[0]: n.attribute[0].t.data_type for n in model.graph.node if n.op_type == "Constant"})
        assert zp_type in {types[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}, key

    # The QDQ ONNX model passes the checker and carries Q/DQ pairs.
    model = onnx.load(res["onnx"])
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear")
    assert res["onnx_bytes"] == os.path.getsize(res["onnx"]) > 0

    # The plot is a PNG.
    with open(res["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "results.json").exists()

    # The float checkpoint is cached and reused.
    ckpts = list(cache.glob("*.pt"))
    assert len(ckpts) == 1
    args = run.parse_args(argv)
    model, train_seconds, path = run._float_model(args, torch.device("cpu"), None, None)
    assert train_seconds == 0.0 and path == str(ckpts[0])
