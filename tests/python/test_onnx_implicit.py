"""TensorRT implicit INT8 export: a Q/DQ-free ONNX graph and a calibration cache whose entries name
tensors of that graph and carry amax / 127 bit for bit."""
import json
import re
import struct

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import torchqat
from torchqat import placement
from torchqat.onnx import export_tensorrt_implicit, read_calibration_cache, write_calibration_cache

from yolo_like import YoloLike


def parse_cache(path):
    """An independent reader written from the format's definition: header, then `name: 8 hex digits`."""
    with open(path) as f:
        lines = f.read().split("\n")
    assert lines[-1] == "", "the cache ends with a newline"
    header, entries = lines[0], {}
    for line in lines[1:-1]:
        m = re.fullmatch(r"(.+): ([0-9a-f]{8})", line)
        assert m, f"malformed cache line {line!r}"
        assert m.group(1) not in entries, f"tensor {m.group(1)} appears twice"
        entries[m.group(1)] = np.frombuffer(bytes.fromhex(m.group(2)), dtype=">f4")[0].astype(np.float32)
    return header, entries


def graph_tensors(proto):
    g = proto.graph
    return {i.name for i in g.input} | {o for n in g.node for o in n.output}


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def calibrated(model, shape, method="max"):
    torchqat.quantize_model(model)
    data = [torch.randn(*shape) for _ in range(3)]
    torchqat.calibrate(model, data, method=method, progress=False)
    return model, data


def float_reference(model, x):
    """The model with every quantizer disabled: what the Q/DQ-free graph computes."""
    saved = [(q, q._disabled) for q in model.modules() if isinstance(q, torchqat.nn.TensorQuantizer)]
    for q, _ in saved:
        q.disable()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for q, d in saved:
            if not d:
                q.enable()


def test_cache_entries_are_the_input_quantizers_amax_over_127_bit_for_bit(tmp_path):
    model, data = calibrated(small_net(), (4, 3, 16, 16))
    scales = export_tensorrt_implicit(model, (data[0],), tmp_path / "m.onnx", tmp_path / "m.cache",
                                      input_names=["images"], output_names=["logits"])
    header, entries = parse_cache(tmp_path / "m.cache")
    assert header == "TRT-8XXX-EntropyCalibration2"
    assert entries == scales
    proto = onnx.load(tmp_path / "m.onnx")
    assert not [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert set(entries) <= graph_tensors(proto)
    # Each weighted layer's data input carries its own input quantizer's amax / 127.
    layers = [m for m in model.modules() if isinstance(m, (torchqat.nn.QuantConv2d, torchqat.nn.QuantLinear))]
    consumers = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(consumers) == len(layers)
    for layer, node in zip(layers, consumers):
        expect = np.float32(layer._input_quantizer.amax.item()) / np.float32(127)
        assert entries[node.input[0]].tobytes() == np.float32(expect).tobytes(), node.name
    assert entries["images"] == np.float32(layers[0]._input_quantizer.amax.item()) / np.float32(127)


def test_qdq_free_graph_runs_like_the_float_model(tmp_path):
    model, data = calibrated(small_net(), (4, 3, 16, 16))
    export_tensorrt_implicit(model, (data[0],), tmp_path / "m.onnx", tmp_path / "m.cache",
                             input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "b"}})
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(6, 3, 16, 16)
    (out,) = sess.run(None, {"images": x.numpy()})
    ref = float_reference(model, x).numpy()
    # Float graph vs float model: only fp32 summation order differs (a few ulps of the logits).
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # ...and the model itself was left quantizing.
    assert all(not q._disabled for q in model.modules() if isinstance(q, torchqat.nn.TensorQuantizer))


def test_shared_groups_of_the_yolo_like_net_carry_one_scale(tmp_path):
    torch.manual_seed(0)
    model = YoloLike().eval()
    torchqat.quantize_model(model)
    placement.share_scales(model, torch.randn(1, 3, 64, 64))
    torchqat.calibrate(model, [torch.randn(2, 3, 64, 64) for _ in range(2)], method="max", progress=False)
    json_path = tmp_path / "ranges.json"
    scales = export_tensorrt_implicit(model, (torch.randn(1, 3, 64, 64),), tmp_path / "y.onnx", tmp_path / "y.cache",
                                      dynamic_range_path=json_path)
    proto = onnx.load(tmp_path / "y.onnx")
    _, entries = parse_cache(tmp_path / "y.cache")
    assert entries == scales and set(entries) <= graph_tensors(proto)
    concats = [n for n in proto.graph.node if n.op_type == "Concat"]
    assert concats
    for n in concats:
        values = {entries[i].tobytes() for i in n.input if i in entries}
        assert len(values) <= 1, f"{n.name}: its inputs carry {len(values)} scales"
    assert any(len([i for i in n.input if i in entries]) >= 2 for n in concats)
    ranges = json.loads(json_path.read_text())
    assert set(ranges) == set(entries)
    for name, amax in ranges.items():
        assert amax == pytest.approx(float(entries[name]) * 127, rel=1e-7)


def test_reader_round_trip(tmp_path):
    path = tmp_path / "c.cache"
    write_calibration_cache({"a": np.float32(0.5), "b/c.1": np.float32(1 / 127)}, path, header="TRT-8601-EntropyCalibration2")
    header, scales = read_calibration_cache(path)
    assert header == "TRT-8601-EntropyCalibration2"
    assert scales == {"a": np.float32(0.5), "b/c.1": np.float32(1 / 127)}
    assert path.read_text().splitlines()[1] == "a: " + struct.pack(">f", 0.5).hex()
    # (bad input to the writer and to strip_qdq: docs/errors.md E125-E129)
