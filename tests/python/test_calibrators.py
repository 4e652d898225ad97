"""Calibrators: the amax searches against a numpy transcription of pytorch-quantization's
algorithms (written here, not imported), the histogram itself, growth, bad inputs, NaN/Inf,
CUDA against CPU, and the 2-process (gloo) merge."""
import math
import os
import socket
import tempfile

import numpy as np
import pytest
import torch

import torchqat
from torchqat import calib
from torchqat.nn import TensorQuantizer
from torchqat.tensor_quant import QuantDescriptor

from conftest import cuda  # noqa: E402  (GPU and a CUDA build)


# ----- numpy references (pytorch-quantization 2.2 calib/histogram.py, transcribed) ----------------

def _kl(p, q):
    """scipy.stats.entropy(p, q): both normalised; inf where p > 0 and q == 0; NaN when q sums to 0."""
    p = p / p.sum()
    if q.sum() == 0:
        return math.nan
    q = q / q.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, np.where(q > 0, p * np.log(p / q), np.inf), 0.0)
    return terms.sum()


def ref_entropy(hist, edges, num_bits=8, unsigned=False, stride=1, start_bin=128, nan_wins=True):
    """_compute_amax_entropy. nan_wins=False skips NaN divergences (torchqat's documented choice)."""
    bins = np.array(hist, dtype=np.int64)
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1 + int(unsigned))
    divergences = []
    for i in range(start_bin, len(bins) + 1, stride):
        space = np.linspace(0, i, num=nbins + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        kept = digitized != -1
        level_sum = np.bincount(digitized[kept], weights=bins[:i][kept], minlength=nbins)
        level_nonempty = np.bincount(digitized[kept], minlength=nbins)
        q = np.zeros(i, dtype=np.float64)
        q[kept] = level_sum[digitized[kept]] / level_nonempty[digitized[kept]]
        p = bins[:i].astype(np.float64)
        p[-1] += bins[i:].sum()
        divergences.append(_kl(p, q))
    d = np.array(divergences)
    if not nan_wins:
        d = np.where(np.isnan(d), np.inf, d)
    last_argmin = len(d) - 1 - np.argmin(d[::-1])
    return edges[last_argmin * stride + start_bin]


def ref_fake_quant(x, amax, num_bits, unsigned):
    """float32 fake quant, narrow range: step = amax/bound, q = clip(rint(x / step)) * step."""
    bound = np.float32(2.0 ** (num_bits - 1 + int(unsigned)) - 1)
    step = np.float32(amax) / bound
    inv = np.float32(1.0) / step
    qmin = np.float32(0.0) if unsigned else -bound
    return (np.clip(np.rint(x * inv), qmin, bound) * step).astype(np.float32)


def ref_mse(hist, width, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """_compute_amax_mse with float64 counts (pytorch-quantization's float32 counts lose precision)."""
    counts = np.asarray(hist, dtype=np.float64)
    centers = ((np.arange(len(counts)) + 0.5) * width).astype(np.float32)
    mses, arguments = [], []
    for i in range(start_bin, len(centers), stride):
        q = ref_fake_quant(centers, centers[i], num_bits, unsigned)
        mses.append(((q.astype(np.float64) - centers.astype(np.float64)) ** 2 * counts).sum())
        arguments.append(i)
    return centers[arguments[int(np.argmin(mses))]]


def ref_percentile(hist, edges, percentile):
    total = hist.sum()
    cdf = np.cumsum(hist / total)
    idx = np.searchsorted(cdf, percentile / 100)
    return edges[idx]


def ref_hist(values, width, bins):
    """torchqat's binning: floor(float32 |x| * float32(1 / width)), past-the-end into the last bin."""
    a = np.abs(values.astype(np.float32))
    idx = np.floor(a * np.float32(1.0 / width)).astype(np.int64)
    return np.bincount(np.minimum(idx, bins - 1), minlength=bins)


def ref_hist_batches(batches, width, first_bins):
    """Per batch, as np.histogram counts it: against the range grown so far, so a value on the
    right edge of the range at that time stays in what was then the last bin."""
    hist = np.zeros(first_bins, dtype=np.int64)
    for b in batches:
        need = int(math.ceil(float(np.abs(b).max()) / width))
        if need > len(hist):
            hist = np.concatenate([hist, np.zeros(need - len(hist), dtype=np.int64)])
        hist += ref_hist(b, width, len(hist))
    return hist


def _state(cal):
    hist = cal._calib_hist.cpu().numpy()
    width = cal._calib_bin_width
    return hist, np.arange(len(hist) + 1) * width, width


# ----- data ------------------------------------------------------------------------------------------

def _distribution(name, n=100_000):
    g = np.random.default_rng(1234)
    if name == "gaussian":
        x = g.standard_normal(n)
    elif name == "laplace":
        x = g.laplace(size=n)
    elif name == "bimodal":  # mass at 0 and a second mode far out
        x = np.concatenate([g.normal(0, 0.5, n // 2), g.normal(6, 0.7, n - n // 2)])
    elif name == "heavy_tail":  # student-t plus a few large outliers
        x = np.concatenate([g.standard_t(2, n - 20), g.uniform(50, 200, 20) * g.choice([-1, 1], 20)])
    elif name == "relu":  # half exact zeros
        x = np.maximum(g.standard_normal(n), 0)
    else:
        raise ValueError(name)
    return torch.from_numpy(x.astype(np.float32))


DISTRIBUTIONS = ["gaussian", "laplace", "bimodal", "heavy_tail", "relu"]


@pytest.fixture(scope="module")
def collected():
    out = {}
    for name in DISTRIBUTIONS:
        cal = calib.HistogramCalibrator(8, None, False)
        x = _distribution(name)
        for chunk in x.chunk(4):
            cal.collect(chunk)
        out[name] = (cal, x)
    return out


# ----- the searches against the references --------------------------------------------------------------

@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_histogram_counts_every_value_once(collected, name):
    cal, x = collected[name]
    hist, _, width = _state(cal)
    assert hist.sum() == x.numel()
    np.testing.assert_array_equal(hist, ref_hist_batches([c.numpy() for c in x.chunk(4)], width, 2048))


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_entropy_matches_reference(collected, name):
    cal, _ = collected[name]
    hist, edges, _ = _state(cal)
    amax = cal.compute_amax("entropy")
    assert amax.dtype == torch.float32 and amax.dim() == 0
    assert amax.item() == pytest.approx(ref_entropy(hist, edges), rel=1e-6)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_mse_matches_reference(collected, name):
    cal, _ = collected[name]
    hist, _, width = _state(cal)
    assert cal.compute_amax("mse").item() == pytest.approx(float(ref_mse(hist, width)), rel=1e-6)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("p", [50.0, 99.0, 99.99, 100.0])
def test_percentile_matches_reference(collected, name, p):
    cal, _ = collected[name]
    hist, edges, _ = _state(cal)
    assert cal.compute_amax("percentile", percentile=p).item() == pytest.approx(ref_percentile(hist, edges, p),
                                                                                rel=1e-6)


def test_search_options_match_reference(collected):
    cal, _ = collected["laplace"]
    hist, edges, width = _state(cal)
    for stride, start_bin in [(4, 128), (1, 300), (16, 1)]:
        got = cal.compute_amax("entropy", stride=stride, start_bin=start_bin).item()
        assert got == pytest.approx(ref_entropy(hist, edges, stride=stride, start_bin=start_bin), rel=1e-6)
        got = cal.compute_amax("mse", stride=stride, start_bin=start_bin).item()
        assert got == pytest.approx(float(ref_mse(hist, width, stride=stride, start_bin=start_bin)), rel=1e-6)


@pytest.mark.parametrize("num_bits,unsigned", [(4, False), (6, True), (8, True)])
def test_other_bit_widths_match_reference(num_bits, unsigned):
    x = _distribution("laplace", 50_000)
    if unsigned:
        x = x.abs()
    cal = calib.HistogramCalibrator(num_bits, None, unsigned, num_bins=512)
    cal.collect(x)
    hist, edges, width = _state(cal)
    assert cal.compute_amax("entropy").item() == pytest.approx(ref_entropy(hist, edges, num_bits, unsigned), rel=1e-6)
    assert cal.compute_amax("mse").item() == pytest.approx(float(ref_mse(hist, width, num_bits, unsigned)), rel=1e-6)


def test_counts_beyond_2_pow_24_in_one_bin():
    """pytorch-quantization's float32 histogram saturates at 2^24 per bin; counts here are int64."""
    g = np.random.default_rng(5)
    centres = (np.arange(2048) + 0.5) / 2048
    counts = (3e7 * np.exp(-0.5 * (centres / 0.15) ** 2)).astype(np.int64) + g.integers(0, 3, 2048)
    assert counts.max() > 2 ** 24
    width = 4.0 / 2048
    edges = np.arange(2049) * width
    cal = calib.HistogramCalibrator(8, None, False)
    cal._impl.set_state(torch.from_numpy(counts), width)
    assert cal.compute_amax("entropy").item() == pytest.approx(ref_entropy(counts, edges), rel=1e-6)
    assert cal.compute_amax("mse").item() == pytest.approx(float(ref_mse(counts, width)), rel=1e-6)
    for p in (99.0, 99.999):
        assert cal.compute_amax("percentile", percentile=p).item() == pytest.approx(
            ref_percentile(counts, edges, p), rel=1e-6)


def test_collected_count_beyond_2_pow_24_is_exact():
    cal = calib.HistogramCalibrator(8, None, False)
    x = torch.zeros(2 ** 24 + 7)
    x[-1] = 1.0
    cal.collect(x)
    assert cal._calib_hist[0].item() == 2 ** 24 + 6


def test_all_zero_data_gives_zero_amax():
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.zeros(1000))
    cal.collect(torch.zeros(10, 10))
    for method in ("entropy", "mse", "percentile"):
        amax = cal.compute_amax(method)
        assert amax is not None and amax.item() == 0.0


def test_data_near_the_float32_minimum_is_counted():
    """max |x| 1e-38: max/num_bins has no finite float32 inverse, so the width is floored; every
    value is still counted and the searches return a finite amax within the range."""
    x = torch.tensor([1.00909e-38, -3e-39, 5e-40, 0.0])
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(x)
    hist, _, width = _state(cal)
    assert hist.sum() == x.numel() and len(hist) == 2048
    assert np.isfinite(np.float32(1.0 / width))
    for method in ("entropy", "mse", "percentile"):
        amax = cal.compute_amax(method).item()
        assert math.isfinite(amax) and 0.0 <= amax <= width * len(hist) * (1 + 1e-6)  # float32 amax
    cal.collect(torch.tensor([1.0]))  # a normal range later grows (and merges) as usual
    assert cal._calib_hist.sum().item() == x.numel() + 1


def test_data_near_the_float32_maximum_gives_a_float32_amax():
    """A bin edge past max |x| = 3.4e38 passes FLT_MAX; amax is clamped to it (fuzzer-found: the
    float32 conversion threw)."""
    big = torch.finfo(torch.float32).max
    cal = calib.HistogramCalibrator(8, None, False, num_bins=128)
    cal.collect(torch.tensor([1.0, 2.0]))
    cal.collect(torch.tensor([big, -big / 3, 1e30]))
    for method, kw in (("entropy", {"start_bin": 1}), ("mse", {"start_bin": 1}), ("percentile", {"percentile": 100.0})):
        amax = cal.compute_amax(method, **kw).item()
        assert math.isfinite(amax) and 0.0 <= amax <= big
    # Entropy's last candidate is the top edge, bins x width, past FLT_MAX here: clamped to it.
    hist, _, width = _state(cal)
    assert len(hist) * width > big
    assert cal.compute_amax("entropy", start_bin=len(hist)).item() == big


def test_zeros_before_the_range_is_known_count_in_bin_zero():
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.zeros(100))
    cal.collect(torch.tensor([0.0, 1.0, -2.0]))
    hist = cal._calib_hist
    assert hist[0].item() == 101 and hist.sum().item() == 103


def test_skip_zeros():
    cal = calib.HistogramCalibrator(8, None, False, skip_zeros=True)
    x = torch.tensor([0.0, 0.0, 0.5, -1.0, 0.0])
    cal.collect(x)
    assert cal._calib_hist.sum().item() == 2


def test_entropy_skips_candidates_without_mass():
    """Data with no values near 0: for small candidate ranges Q is empty. pytorch-quantization's
    NaN divergence wins its argmin there (amax below every value); torchqat skips them."""
    x = torch.from_numpy(np.random.default_rng(3).uniform(0.5, 1.0, 20_000).astype(np.float32))
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(x)
    hist, edges, _ = _state(cal)
    ours = cal.compute_amax("entropy").item()
    assert ours == pytest.approx(ref_entropy(hist, edges, nan_wins=False), rel=1e-6)
    assert ref_entropy(hist, edges) < 0.5 <= ours  # the reference clips every value


# ----- growth ------------------------------------------------------------------------------------------

def test_growth_equals_one_histogram_of_all_data_with_the_final_edges():
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(5000, generator=g) * s for s in (1.0, 3.0, 0.5, 7.0)]
    cal = calib.HistogramCalibrator(8, None, False, num_bins=1024)
    for b in batches:
        cal.collect(b)
    hist, _, width = _state(cal)
    assert width == pytest.approx(batches[0].abs().max().item() / 1024, rel=1e-12)
    everything = torch.cat(batches)
    assert len(hist) == math.ceil(everything.abs().max().item() / width)
    np.testing.assert_array_equal(hist, ref_hist(everything.numpy(), width, len(hist)))


def test_growth_beyond_64x_merges_bins_instead_of_growing_without_bound():
    g = torch.Generator().manual_seed(3)
    batches = [torch.rand(20000, generator=g), torch.randn(20000, generator=g) * 300]
    cal = calib.HistogramCalibrator(8, None, False)  # 2048 bins
    cal.collect(batches[0])
    first_width = cal._calib_bin_width
    cal.collect(batches[1])
    hist, _, width = _state(cal)
    ratio = width / first_width
    assert ratio > 1 and ratio == 2 ** round(math.log2(ratio))  # whole bins merged, edges kept
    assert 32 * 2048 < len(hist) <= 64 * 2048
    everything = torch.cat(batches)
    assert len(hist) == math.ceil(everything.abs().max().item() / width)
    assert hist.sum() == everything.numel()
    # The first batch as binned then, its bins merged; the second binned at the final width.
    first = ref_hist(batches[0].numpy(), first_width, 2048)
    merged = np.bincount(np.arange(2048) // int(ratio), weights=first, minlength=len(hist)).astype(np.int64)
    np.testing.assert_array_equal(hist, merged + ref_hist(batches[1].numpy(), width, len(hist)))
    edges = np.arange(len(hist) + 1) * width
    got = cal.compute_amax("percentile", percentile=99.9).item()
    assert got == pytest.approx(float(ref_percentile(hist, edges, 99.9)), rel=1e-6)


def test_no_growth_when_the_first_batch_holds_the_max():
    x = _distribution("gaussian")
    x[0] = x.abs().max() * 2
    one = calib.HistogramCalibrator(8, None, False)
    one.collect(x)
    parts = calib.HistogramCalibrator(8, None, False)
    for chunk in x.chunk(5):
        parts.collect(chunk)
    assert torch.equal(one._calib_hist, parts._calib_hist)
    assert one._calib_bin_width == parts._calib_bin_width


def test_mse_on_a_grown_histogram_matches_reference_in_bounded_memory():
    """A first batch 20x narrower than the rest grows the histogram to ~40000 bins, most of them
    non-empty (the Fashion-MNIST demo met 10^5). The search must stay exact and must not hold
    memory per candidate: an earlier batched version grew by gigabytes here."""
    import resource

    g = torch.Generator().manual_seed(11)
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.randn(20000, generator=g) * 0.05)
    cal.collect(torch.randn(400000, generator=g).abs() * 1.0 + torch.rand(400000, generator=g) * 2)
    hist, _, width = _state(cal)
    assert len(hist) > 30000 and np.count_nonzero(hist) > 20000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    got = cal.compute_amax("mse", start_bin=len(hist) - 600).item()
    got_all = cal.compute_amax("mse").item()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 256, f"the mse search raised peak memory by {grown_mib:.0f} MiB"
    # The numpy reference costs a second per thousand candidates here: it checks the last 600;
    # the full search's pick must be a bin centre whose error is no worse than that one's.
    assert got == pytest.approx(float(ref_mse(hist, width, start_bin=len(hist) - 600)), rel=1e-6)
    counts = np.asarray(hist, dtype=np.float64)
    centers = ((np.arange(len(counts)) + 0.5) * width).astype(np.float32)

    def err(amax):
        q = ref_fake_quant(centers, np.float32(amax), 8, False)
        return ((q.astype(np.float64) - centers.astype(np.float64)) ** 2 * counts).sum()

    assert np.isclose(centers, got_all, rtol=1e-7, atol=0).any()
    assert err(got_all) <= err(got) * (1 + 1e-9)


# ----- the ops ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_histogram_abs_op(dtype):
    x = (torch.randn(10_001) * 3).to(dtype)
    hist = torch.zeros(100, dtype=torch.long)
    torch.ops.torchqat.histogram_abs(x, hist, 0.05, False)
    np.testing.assert_array_equal(hist.numpy(), ref_hist(x.float().numpy(), 0.05, 100))
    torch.ops.torchqat.histogram_abs(x, hist, 0.05, False)  # accumulates
    assert hist.sum().item() == 2 * x.numel()


def test_histogram_abs_op_errors():
    x = torch.randn(10)
    with pytest.raises(TypeError, match="hist must be int64"):
        torch.ops.torchqat.histogram_abs(x, torch.zeros(4), 0.1, False)
    with pytest.raises(ValueError, match="bin_width"):
        torch.ops.torchqat.histogram_abs(x, torch.zeros(4, dtype=torch.long), 0.0, False)
    with pytest.raises(ValueError, match="1-d"):
        torch.ops.torchqat.histogram_abs(x, torch.zeros(2, 2, dtype=torch.long), 0.1, False)


@pytest.mark.parametrize("make,keep", [
    (lambda: torch.randn(7, 5, 3, 3), []),
    (lambda: torch.randn(7, 5, 3, 3), [0]),
    (lambda: torch.randn(4, 6, 5, 5), [1]),
    (lambda: torch.randn(4, 6, 5, 5).to(memory_format=torch.channels_last), [1]),
    (lambda: torch.randn(3, 8, 33), [-1]),
    (lambda: torch.randn(3, 8, 33), [0, 2]),
    (lambda: torch.randn(9, 6).t(), [0]),
    (lambda: torch.randn(5, 4, 3), [0, 1, 2]),
    (lambda: torch.randn(2, 100_003), [0]),
    (lambda: torch.randn(300_001), []),
])
def test_abs_max_op_layouts(make, keep):
    x = make()
    got = torch.ops.torchqat.abs_max(x, keep)
    nd = x.dim()
    reduce = [d for d in range(nd) if d not in [k % nd for k in keep]]
    if not keep:
        want = x.abs().max()
    elif not reduce:  # every dim kept (amax(dim=[]) would reduce them all)
        want = x.abs()
    else:
        want = x.abs().amax(dim=reduce, keepdim=True)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.equal(got, want.float())


def test_abs_max_refuses_nan_and_inf():
    x = torch.randn(1000)
    x[17] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        torch.ops.torchqat.abs_max(x, [])
    x[17] = float("-inf")
    with pytest.raises(ValueError, match="Inf"):
        torch.ops.torchqat.abs_max(x.reshape(10, 100), [0])


# ----- bad inputs ----------------------------------------------------------------------------------

def test_compute_amax_before_collect():
    # Max keeps pytorch-quantization's None; a histogram search over nothing is an error.
    assert calib.MaxCalibrator(8, None, False).compute_amax() is None
    h = calib.HistogramCalibrator(8, None, False)
    assert not h.has_data()
    with pytest.raises(RuntimeError, match="no data collected yet"):
        h.compute_amax("entropy")
    h.collect(torch.zeros(3))  # all-zero data is data: amax 0
    assert h.has_data() and h.compute_amax("entropy").item() == 0.0


def test_unknown_method():
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.randn(100))
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        cal.compute_amax("kl")


@pytest.mark.parametrize("p", [0.0, -1.0, 100.5, float("nan")])
def test_percentile_out_of_range(p):
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.randn(100))
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]"):
        cal.compute_amax("percentile", percentile=p)


def test_num_bins_too_small():
    with pytest.raises(ValueError, match="num_bins must be at least 128"):
        calib.HistogramCalibrator(8, None, False, num_bins=100)
    with pytest.raises(ValueError, match="num_bins must be at least 256"):
        calib.HistogramCalibrator(8, None, True, num_bins=200)
    calib.HistogramCalibrator(4, None, False, num_bins=8)


def test_histogram_is_per_tensor_only():
    with pytest.raises(ValueError, match="axis must be None"):
        calib.HistogramCalibrator(8, 0, False)


def test_start_bin_beyond_the_histogram():
    cal = calib.HistogramCalibrator(8, None, False, num_bins=128)
    cal.collect(torch.randn(100))
    with pytest.raises(ValueError, match="start_bin"):
        cal.compute_amax("mse", start_bin=128)
    cal.compute_amax("entropy", start_bin=128)  # i = 128 is the one entropy candidate


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_data_are_refused(bad):
    x = torch.randn(100)
    x[3] = bad
    for cal in (calib.MaxCalibrator(8, None, False), calib.HistogramCalibrator(8, None, False)):
        with pytest.raises(ValueError, match="NaN" if math.isnan(bad) else "Inf"):
            cal.collect(x)
        assert not cal.has_data()  # nothing of the bad batch was kept
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.ones(10))
    with pytest.raises(ValueError):
        cal.collect(x)
    assert cal._calib_hist.sum().item() == 10  # nothing of the bad batch was counted


# ----- MaxCalibrator -----------------------------------------------------------------------------------

def test_max_running_per_tensor_and_tracking():
    cal = calib.MaxCalibrator(8, None, False, track_amax=True)
    cal.collect(torch.tensor([1.0, -3.0]))
    cal.collect(torch.tensor([2.0, 0.5]))
    assert cal.compute_amax().item() == 3.0 and cal._calib_amax.dim() == 0
    assert [a.item() for a in cal.amaxs] == [3.0, 2.0]
    cal.reset()
    assert cal.compute_amax() is None


def test_max_per_channel_with_an_all_zero_channel():
    cal = calib.MaxCalibrator(8, (0,), False)
    x = torch.randn(4, 3, 2, 2)
    x[2] = 0
    cal.collect(x)
    cal.collect(x * 0.5)
    amax = cal.compute_amax()
    assert amax.shape == (4, 1, 1, 1)
    assert torch.equal(amax, x.abs().amax(dim=(1, 2, 3), keepdim=True))
    assert amax[2].item() == 0.0


def test_max_shape_change():
    cal = calib.MaxCalibrator(8, 1, False)
    cal.collect(torch.randn(2, 3, 4))
    cal.collect(torch.randn(5, 3, 1))  # same kept dim: fine
    with pytest.raises(RuntimeError, match="amax shape changed"):
        cal.collect(torch.randn(2, 4, 4))


def test_max_axis_out_of_range():
    with pytest.raises(ValueError, match="axis"):
        calib.MaxCalibrator(8, 3, False).collect(torch.randn(2, 3))


# ----- model level -----------------------------------------------------------------------------------

def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torchqat.nn.QuantConv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torchqat.nn.QuantConv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torchqat.nn.QuantLinear(8 * 8 * 8, 10))


def _batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 3, 8, 8, generator=g), torch.zeros(2)) for _ in range(n)]


def _record_inputs(model):
    """{quantizer: [tensors it is called with]} and the hook handles (remove them after)."""
    seen, handles = {}, []
    for m in model.modules():
        if isinstance(m, TensorQuantizer):
            seen[m] = []
            handles.append(m.register_forward_pre_hook(lambda mod, args: seen[mod].append(args[0].detach().clone())))
    return seen, handles


def ref_calibrated_amax(batches, method, axis=None, width=None):
    """The amax calibrate() must load, from the tensors a quantizer saw, by the numpy references
    above: abs-max (per tensor, or per channel on the kept dims axis: calibrate uses max there), or
    the search on a 2048-bin histogram of `width` (the first batch's abs-max / 2048) that later
    batches extend."""
    arrays = [b.numpy() for b in batches]
    if axis is not None:
        keep = {axis} if isinstance(axis, int) else set(axis)
        dims = tuple(d for d in range(arrays[0].ndim) if d not in keep)
        return np.max([np.abs(a).max(axis=dims) for a in arrays], axis=0)
    if method == "max":
        return max(np.abs(a).max() for a in arrays)
    hist = ref_hist_batches([a.ravel() for a in arrays], width, 2048)
    edges = np.arange(len(hist) + 1) * width
    if method == "entropy":
        return ref_entropy(hist, edges)
    if method == "mse":
        return ref_mse(hist, width)
    return ref_percentile(hist, edges, 99.99)


@pytest.mark.parametrize("method", ["max", "entropy", "percentile", "mse"])
def test_calibrate_loads_amax_and_restores_quantization(method):
    model = _tiny_model()
    data = _batches()
    model.train()
    seen, handles = _record_inputs(model)
    torchqat.calibrate(model, data, method=method, progress=False)
    for h in handles:
        h.remove()
    assert model.training
    quantizers = [m for m in model.modules() if isinstance(m, TensorQuantizer)]
    assert len(quantizers) == 6
    for q in quantizers:
        assert q._if_quant and not q._if_calib
        assert len(seen[q]) == len(data)
        width = None
        if q.axis is None and method != "max":
            # The histogram's width is the first batch's abs-max / 2048 (checked); the reference bins
            # with that exact value so that edges agree to the bit.
            width = q._calibrator._calib_bin_width
            assert width == pytest.approx(float(seen[q][0].abs().max()) / 2048, rel=1e-6)
        want = ref_calibrated_amax(seen[q], method, q.axis, width)
        got = q.amax.numpy()
        # Same float32 edges and candidates as the reference: equal up to float32 rounding of an edge.
        np.testing.assert_allclose(got.reshape(-1), np.reshape(want, -1), rtol=1e-6, atol=0)
    first = model[0]._input_quantizer
    x = torch.cat([b[0] for b in data])
    if method == "max":
        assert first.amax.item() == x.abs().max().item()
    w = model[0].weight
    assert torch.equal(model[0]._weight_quantizer.amax.reshape(-1), w.abs().amax(dim=(1, 2, 3)))


def test_calibrate_num_batches_and_forward_fn():
    model = _tiny_model()
    seen = []

    def forward(m, batch):
        seen.append(batch)
        m(batch[0])

    torchqat.calibrate(model, _batches(6), num_batches=2, forward_fn=forward, progress=False)
    assert len(seen) == 2


def test_calibrate_errors():
    with pytest.raises(ValueError, match="method"):
        torchqat.calibrate(_tiny_model(), _batches(), method="kl", progress=False)
    with pytest.raises(ValueError, match="num_batches"):
        torchqat.calibrate(_tiny_model(), _batches(), num_batches=0, progress=False)
    with pytest.raises(ValueError, match="no enabled torchqat TensorQuantizer"):
        torchqat.calibrate(torch.nn.Linear(2, 2), _batches(), progress=False)
    with pytest.raises(RuntimeError, match="has not seen any tensor|returned None"):
        torchqat.calibrate(_tiny_model(), [], progress=False)


def test_calibrate_weights_percentile_per_channel():
    model = _tiny_model()
    calib.calibrate_weights(model, method="percentile", percentile=100.0)
    w = model[0].weight.detach()
    amax = model[0]._weight_quantizer.amax
    assert amax.shape == (8, 1, 1, 1)
    # percentile 100: the left edge of the bin holding each channel's max (within one bin).
    ref = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    assert torch.all(amax <= ref * (1 + 1e-6)) and torch.all(amax >= ref * (1 - 1.0 / 2048) - 1e-7)


# ----- CUDA against CPU (skipped without a GPU) --------------------------------------------------------

# The kernels themselves (abs_max, histogram_abs) against the CPU: test_calib_cuda.py.

@cuda
def test_cuda_calibrators_equal_cpu():
    x = _distribution("laplace")
    for method in ("entropy", "mse", "percentile"):
        cpu, gpu = calib.HistogramCalibrator(8, None, False), calib.HistogramCalibrator(8, None, False)
        for chunk in x.chunk(3):
            cpu.collect(chunk)
            gpu.collect(chunk.cuda())
        assert gpu._calib_hist.is_cuda
        assert torch.equal(gpu._calib_hist.cpu(), cpu._calib_hist)
        assert gpu.compute_amax(method).item() == cpu.compute_amax(method).item()


@cuda
def test_cuda_abs_max_refuses_nan():
    x = torch.randn(100, device="cuda")
    x[5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        torch.ops.torchqat.abs_max(x, [])


# ----- two processes (gloo, CPU) ---------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batches():
    g = torch.Generator().manual_seed(11)
    # Growing spread: later batches exceed the first range, so histograms grow.
    return [(torch.randn(4, 3, 8, 8, generator=g) * (1 + i), None) for i in range(4)]


def _calibrated_amaxes(model, batches, method):
    torchqat.calibrate(model, batches, method=method, progress=False)
    return {n: m.amax.clone() for n, m in model.named_modules() if isinstance(m, TensorQuantizer)}


def _rank_main(rank, world, port, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        shard = [(x.chunk(world)[rank], y) for x, y in _global_batches()]
        results = {m: _calibrated_amaxes(_tiny_model(), shard, m) for m in ("max", "entropy", "percentile", "mse")}
        # A calibrator used directly: sync merges the histograms of ranks that binned alike.
        cal = calib.HistogramCalibrator(8, None, False)
        cal._lockstep = True
        for x, _ in shard:
            cal.collect(x)
        cal.sync()
        results["hist"] = cal._calib_hist.clone()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_half_the_data_match_one_process():
    world = 2
    with tempfile.TemporaryDirectory() as d:
        torch.multiprocessing.spawn(_rank_main, args=(world, _free_port(), d), nprocs=world, join=True)
        ranks = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(world)]
    batches = _global_batches()
    for method in ("max", "entropy", "percentile", "mse"):
        want = _calibrated_amaxes(_tiny_model(), batches, method)
        for r in ranks:
            assert r[method].keys() == want.keys()
            for name in want:
                assert torch.equal(r[method][name], want[name]), (method, name)
    one = calib.HistogramCalibrator(8, None, False)
    for x, _ in batches:
        one.collect(x)
    for r in ranks:
        assert torch.equal(r["hist"], one._calib_hist)


def test_calibrators_survive_deepcopy_and_pickle_mid_calibration():
    import copy
    import io
    x = _distribution("laplace")
    h = calib.HistogramCalibrator(8, None, False)
    h.collect(x)
    z = calib.HistogramCalibrator(8, None, False)
    z.collect(torch.zeros(10))
    m = calib.MaxCalibrator(8, 0, False)
    m.collect(x.reshape(100, -1))
    for clone in (copy.deepcopy, lambda c: torch.load(io.BytesIO(_saved(c)), weights_only=False)):
        h2, z2, m2 = clone(h), clone(z), clone(m)
        assert torch.equal(h2._calib_hist, h._calib_hist) and h2._calib_bin_width == h._calib_bin_width
        assert h2.compute_amax("mse") == h.compute_amax("mse")
        h2.collect(x * 2)  # the copy is independent and keeps collecting
        assert h._calib_hist.sum() == x.numel()
        assert z2._impl.pending_zeros() == 10 and z2.compute_amax("percentile") == 0
        assert torch.equal(m2.compute_amax(), m.compute_amax())


def _saved(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
