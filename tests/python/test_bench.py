"""The benchmarks under bench/ run end to end at toy sizes, and bench/_resnet.py is ResNet.

No timing is asserted: only that every row is produced and the models are the ones named.
"""
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import _common  # noqa: E402
import _resnet  # noqa: E402
import bench_calib  # noqa: E402
import bench_fake_quant  # noqa: E402
import bench_qat_step  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("arch, params", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_resnet_matches_torchvision_size(arch, params):
    """torchvision's parameter counts: same layers, same widths."""
    model = getattr(_resnet, arch)()
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape, axis", [((2, 4, 6, 6), None), ((2, 4, 6, 6), 1), ((8, 4, 3, 3), 0)])
def test_fake_quant_rows(shape, axis, dtype):
    x = torch.randn(shape).to(dtype)
    rows = bench_fake_quant.bench_fake_quant(x, axis, CPU, repeat=1, runs=2)
    assert [(r[0], r[1]) for r in rows] == [
        ("copy_", "out.copy_(x)"), ("clone", "x.clone()"), ("fwd", "torchqat"), ("fwd", "torch"),
        ("fwd+bwd", "torchqat"), ("fwd+bwd", "torch"), ("fwd+bwd", "5-pass ideal (2.5 x copy_)")]
    assert rows[0][5] == pytest.approx(1.0)
    assert rows[-1][5] == pytest.approx(1.0)
    amax_rows = bench_fake_quant.bench_abs_max(x, axis, CPU, repeat=1, runs=2)
    assert amax_rows[0][0].startswith("torchqat.abs_max") and amax_rows[0][1] is not None


def test_quantized_variants_quantize_every_conv_and_linear():
    model = _resnet.resnet18()
    x = torch.randn(2, 3, 32, 32)
    tq = bench_qat_step.torchqat_model(model, x)
    native = bench_qat_step.native_model(model, tq)
    layers = bench_qat_step._layers(model)
    assert len(layers) == 21
    for name in layers:
        q = tq.get_submodule(name)
        assert q._input_quantizer.amax.numel() == 1
        assert q._weight_quantizer.amax.numel() == q.weight.shape[0]
        assert isinstance(native.get_submodule(name), bench_qat_step.TorchFakeQuant)
    # Same quantization, two implementations: the outputs agree.
    tq.eval()
    native.eval()
    with torch.no_grad():
        torch.testing.assert_close(native(x), tq(x), rtol=1e-4, atol=1e-4)


def test_qat_step_rows():
    cfg = dict(arch="resnet18", batch=2, size=32, bf16=False, channels_last=False)
    rows = bench_qat_step.bench_device(CPU, cfg, steps=1, warmup=0, runs=2)
    assert [r[2] for r in rows] == ["float", "torchqat", "torch native"]
    assert rows[0][4] == "1.00 [1.00, 1.00]"  # the float step over itself, run by run


def test_every_figure_is_repeated_and_reported_with_its_spread():
    assert _common.RUNS >= 5
    s = _common.Spread.of([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (s.median, s.min, s.max, s.runs) == (3.0, 1.0, 5.0, 5)
    assert _common.spread(s, ".1f", 1e3) == "3000.0 [1000.0, 5000.0]"
    assert _common.spread(None, ".1f") == "n/a"
    calls = []
    t = _common.timeit(lambda: calls.append(1), CPU, repeat=3, warmup=1)
    assert t.runs == _common.RUNS and len(calls) == 1 + 3 * _common.RUNS
    assert 0 <= t.min <= t.median <= t.max
    per_run = _common.runs_of({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, CPU, 1, 0, 3)
    assert calls[-6:] == ["a", "b"] * 3 and [len(v) for v in per_run.values()] == [3, 3]  # interleaved


def test_calib_rows_carry_their_spread():
    rows = bench_calib.bench_device(CPU, 1 << 18, repeat=1, runs=3)
    assert [r[1] for r in rows][:4] == ["copy", "histogram", "histogram", "collect"]
    for dev, what, impl, seconds, nbytes, copy_s in rows:
        assert seconds.runs == 3 and 0 < seconds.min <= seconds.median <= seconds.max
    cells = bench_calib._cells(rows[0])
    assert cells[5] == "1.00" and cells[3].count("[") == 1  # copy vs itself; 'median [min, max]'
    searches = bench_calib.bench_searches(repeat=1, runs=2)
    assert [r[1] for r in searches] == ["compute_amax entropy", "compute_amax mse", "compute_amax percentile"]
