"""Checkpoints (pytorch-quantization format, transactional loading of bad files), DDP training
equal to one process, and a long QAT run that must not grow memory."""
import io
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchqat
from torchqat import nn as qnn
from torchqat.tensor_quant import QuantDescriptor


class Net(nn.Module):
    """conv -> relu -> linear, the layer names pytorch-quantization checkpoints use."""

    def __init__(self, learn_input_amax=False):
        super().__init__()
        self.conv = qnn.QuantConv2d(3, 4, 3, quant_desc_input=QuantDescriptor(learn_amax=learn_input_amax))
        self.fc = qnn.QuantLinear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()  # no amax registered either
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def _bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ----- pytorch-quantization format ---------------------------------------------------------------------

def test_pytorch_quantization_state_dict_loads_and_matches_reference():
    torch.manual_seed(1)
    w, b = torch.randn(4, 3, 3, 3), torch.randn(4)
    # What pytorch-quantization saves for a QuantConv2d named "conv": 0-d input amax, [K,1,1,1] weight amax.
    sd = {"conv.weight": w, "conv.bias": b,
          "conv._input_quantizer._amax": torch.tensor(2.5),
          "conv._weight_quantizer._amax": w.abs().amax((1, 2, 3), keepdim=True)}
    model = nn.Sequential()
    model.add_module("conv", qnn.QuantConv2d(3, 4, 3))
    torchqat.load_state_dict(model, sd)
    assert model.conv._input_quantizer.amax.shape == () and model.conv._weight_quantizer.amax.shape == (4, 1, 1, 1)
    x = torch.randn(2, 3, 6, 6) * 2
    # Reference: torch's own fake-quant ops with pytorch-quantization's scale = amax / 127.
    xq = torch.fake_quantize_per_tensor_affine(x, 2.5 / 127, 0, -128, 127)
    scales = sd["conv._weight_quantizer._amax"].flatten() / 127
    wq = torch.fake_quantize_per_channel_affine(w, scales, torch.zeros(4, dtype=torch.int32), 0, -128, 127)
    torch.testing.assert_close(model(x), F.conv2d(xq, wq, b), rtol=0, atol=1e-5)


def test_round_trip_through_a_file(tmp_path):
    src = Net()
    torchqat.calibrate(src, [torch.randn(4, 3, 6, 6)], progress=False)
    path = tmp_path / "net.pt"
    torch.save(src.state_dict(), path)
    dst = Net()
    torchqat.load_state_dict(dst, str(path))
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(dst(x), src(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to save CUDA tensors")
def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path):
    src = Net()
    torchqat.calibrate(src, [torch.randn(4, 3, 6, 6)], progress=False)
    path = tmp_path / "cuda.pt"
    torch.save({k: v.cuda() for k, v in src.state_dict().items()}, path)
    dst = Net()
    torchqat.load_state_dict(dst, str(path))
    assert all(v.device.type == "cpu" for v in dst.state_dict().values())
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(dst(x), src(x))


# ----- bad checkpoints leave the model unchanged ----------------------------------------------------------

def test_truncated_file_names_it_and_changes_nothing(tmp_path):
    good = Net()
    torchqat.calibrate(good, [torch.randn(4, 3, 6, 6)], progress=False)
    data = _bytes(good.state_dict())
    model = Net()
    before = _snapshot(model)
    for cut in (len(data) // 2, len(data) - 10, 50):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(RuntimeError, match="truncated or corrupted") as e:
            torchqat.load_state_dict(model, str(path))
        assert str(path) in str(e.value)
        _assert_same_state(model, before)


@pytest.mark.parametrize("key, value, fragment", [
    ("fc._input_quantizer._amax", torch.tensor(float("nan")), "finite and >= 0"),
    ("fc._input_quantizer._amax", torch.tensor(-1.0), "finite and >= 0"),
    ("conv._weight_quantizer._amax", torch.ones(4, 1, 1, 1) * float("inf"), "finite and >= 0"),
    ("conv._weight_quantizer._amax", torch.ones(3, 1, 1, 1), "does not match the model's"),
    ("fc.weight", torch.ones(5, 7), "does not match the model's"),
])
def test_corrupted_values_raise_and_change_nothing(key, value, fragment):
    src = Net()
    torchqat.calibrate(src, [torch.randn(4, 3, 6, 6)], progress=False)
    sd = src.state_dict()
    sd[key] = value
    model = Net()
    model.conv._weight_quantizer.amax = torch.ones(4, 1, 1, 1)  # one quantizer with amax, the others without
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match=fragment):
        torchqat.load_state_dict(model, sd)
    _assert_same_state(model, before)


def test_per_channel_amax_for_a_quantizer_without_one():
    model = Net()
    sd = {k: v for k, v in Net().state_dict().items()}
    sd["conv._weight_quantizer._amax"] = torch.ones(4)  # [K]: accepted, one per output channel
    torchqat.load_state_dict(model, sd)
    assert model.conv._weight_quantizer.amax.shape == (4,)
    model = Net()
    before = _snapshot(model)
    sd["conv._weight_quantizer._amax"] = torch.ones(1, 4, 1, 1)  # 4 values, but along the wrong axis
    with pytest.raises(RuntimeError, match="does not fit the weight"):
        torchqat.load_state_dict(model, sd)
    _assert_same_state(model, before)


def test_plain_load_state_dict_is_not_transactional_but_ours_is():
    # Why load_state_dict exists: torch copies the good tensors before reporting the bad one.
    src = Net()
    torchqat.calibrate(src, [torch.randn(4, 3, 6, 6)], progress=False)
    sd = src.state_dict()
    sd["fc._input_quantizer._amax"] = torch.tensor(float("nan"))
    plain, ours = Net(), Net()
    with pytest.raises(RuntimeError):
        plain.load_state_dict(sd)
    assert torch.equal(plain.conv.weight, src.conv.weight)  # half loaded
    before = _snapshot(ours)
    with pytest.raises(RuntimeError):
        torchqat.load_state_dict(ours, sd)
    _assert_same_state(ours, before)


def test_strict_keys():
    sd = Net().state_dict()
    del sd["fc.bias"]
    sd["extra"] = torch.ones(1)
    model = Net()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match=r"missing keys: \['fc.bias'\]") as e:
        torchqat.load_state_dict(model, sd)
    assert "unexpected keys: ['extra']" in str(e.value)
    _assert_same_state(model, before)
    torchqat.load_state_dict(model, sd, strict=False)
    assert torch.equal(model.fc.weight, sd["fc.weight"])


# ----- DDP on two CPU processes equals one process on the whole batch ----------------------------------

STEPS, LR = 3, 0.05


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_data():
    g = torch.Generator().manual_seed(5)
    return torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)


# How the input quantizer's range is trained: "fixed" (calibrated, frozen), "pact" (learn_amax:
# the quantizer's clip.clip_value_min/max, PACT gradient) or "lsq" (the calibrated `_amax` made an
# nn.Parameter: fake_quant's LSQ amax gradient).
MODES = ("fixed", "pact", "lsq")


def _net(mode):
    return Net(learn_input_amax=mode == "pact")


def _calibrate(model, x, mode):
    """Histogram percentile calibration (merged across ranks under torch.distributed); for "lsq"
    the input quantizer's amax then becomes a Parameter, as a user learning it by LSQ does."""
    torchqat.calibrate(model, [x], method="percentile", percentile=99.0, progress=False)
    if mode == "lsq":
        q = model.conv._input_quantizer
        q._amax = nn.Parameter(q._amax.detach().clone())


def _train(model, x, y, mode, wrap=lambda m: m):
    """Calibrate on x, then SGD steps on (x, y); a learned amax gets its own, larger step so that
    its update shows."""
    _calibrate(model, x, mode)
    net = wrap(model)
    def learned_range(n):
        return ".clip.clip_value_" in n or n.endswith("_input_quantizer._amax")
    amax = [p for n, p in net.named_parameters() if learned_range(n)]
    rest = [p for n, p in net.named_parameters() if not learned_range(n)]
    opt = torch.optim.SGD([{"params": rest}, {"params": amax, "lr": 1000 * LR}], lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ddp_rank(rank, world, port, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y = _global_data()
        shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        states = {}
        for mode in MODES:
            torch.manual_seed(0)
            states[mode] = _train(_net(mode), x[shard], y[shard], mode, DistributedDataParallel)
        torch.save(states, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_states(tmp_path_factory):
    """{mode: [state of rank 0, state of rank 1]}, one spawn for the three tests."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not built")
    world, d = 2, tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(_ddp_rank, args=(world, _free_port(), str(d)), nprocs=world, join=True)
    ranks = [torch.load(d / f"rank{r}.pt") for r in range(world)]
    return {mode: [r[mode] for r in ranks] for mode in MODES}


def _check_equal_to_one_process(ranks, mode):
    torch.manual_seed(0)
    want = _train(_net(mode), *_global_data(), mode)
    for r, got in enumerate(ranks):
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=lambda m, k=k: f"rank {r} {k}: {m}")


def test_ddp_two_ranks_equal_one_process(ddp_states):
    # Weights, biases and calibrated amax (buffers) after calibration + 3 SGD steps.
    _check_equal_to_one_process(ddp_states["fixed"], "fixed")


# learn_amax trains the clip range by the PACT gradient, a plain sum over the batch: DDP's gradient
# average gives exactly one process's update.
def test_ddp_learned_amax_equals_one_process(ddp_states):
    _check_equal_to_one_process(ddp_states["pact"], "pact")


# An amax Parameter trains by fake_quant's LSQ gradient, scaled by 1 / sqrt(N_F * bound) with N_F
# one sample's element count: every rank scales as one process does, so DDP's average of the
# per-rank sums is one process's gradient (a local-batch N would make it sqrt(2) times as large).
def test_ddp_lsq_amax_equals_one_process(ddp_states):
    key = "conv._input_quantizer._amax"
    torch.manual_seed(0)
    calibrated = _net("lsq")
    _calibrate(calibrated, _global_data()[0], "lsq")
    moved = (ddp_states["lsq"][0][key] - calibrated.state_dict()[key]).abs().item()
    assert moved > 1e-3, f"the LSQ amax moved by {moved} only: the test would not see a wrong scale"
    _check_equal_to_one_process(ddp_states["lsq"], "lsq")


# ----- long run: resident memory must not grow ---------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_long_qat_run_does_not_grow_memory():
    # A resource bound, not a timing one: a leak of over ~12 KB per step (a tensor kept by a
    # calibrator, a graph held through amax) exceeds 20 MB over the 1800 steps measured.
    # One thread: tiny ops on a busy machine spend more time waking OpenMP threads than computing.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        growth = _qat_rss_growth()
    finally:
        torch.set_num_threads(threads)
    assert growth < 20 * 2**20, f"RSS grew {growth / 2**20:.1f} MB between step 200 and step 2000"


def _qat_rss_growth():
    torch.manual_seed(0)
    model = nn.Sequential(qnn.QuantLinear(16, 32, quant_desc_input=QuantDescriptor(learn_amax=True)), nn.ReLU(),
                          qnn.QuantLinear(32, 4))
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    torchqat.calibrate(model, [x], progress=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rss = {}
    for step in range(1, 2001):
        opt.zero_grad()
        F.cross_entropy(model(x + 0.01 * torch.randn_like(x)), y).backward()
        opt.step()
        if step in (200, 2000):
            rss[step] = _rss_bytes()
    return rss[2000] - rss[200]
