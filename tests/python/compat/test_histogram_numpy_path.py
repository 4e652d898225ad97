"""HistogramCalibrator(torch_hist=False): pytorch-quantization's numpy path, checked against numpy
itself (np.histogram / np.arange called as its collect does) and against its amax searches written
out here with numpy: the first batch's bins span [min, max], later batches grow the range with bins
of the same width and drop values below the first edge."""
import numpy as np
import pytest
import torch

from torchqat import calib
from torchqat import nn as quant_nn
from torchqat.tensor_quant import QuantDescriptor


def _numpy_collect(batches, num_bins, skip_zeros=False):
    """pytorch-quantization 2.2.1's collect with torch_hist=False, step for step."""
    hist = edges = None
    for x in batches:
        x_np = x.abs().float().numpy()
        if skip_zeros:
            x_np = x_np[np.where(x_np != 0)]
        if edges is None:
            hist, edges = np.histogram(x_np, bins=num_bins)
        else:
            temp_amax = np.max(x_np)
            if temp_amax > edges[-1]:
                width = edges[1] - edges[0]
                edges = np.hstack((edges, np.arange(edges[-1] + width, temp_amax + width, width)))
            new, edges = np.histogram(x_np, bins=edges)
            new[:len(hist)] += hist
            hist = new
    return hist, edges


def _batches(seed):
    g = torch.Generator().manual_seed(seed)
    # Growing ranges (the later batches append bins) and a later minimum below the first one.
    return [torch.randn(4000, generator=g) * s + o for s, o in ((1.0, 3.0), (2.5, 0.0), (6.0, 1.0), (0.5, 0.0))]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("skip_zeros", [False, True])
def test_collect_matches_numpy_bin_for_bin(seed, skip_zeros):
    batches = _batches(seed)
    if skip_zeros:
        batches[1][:50] = 0.0
    cal = calib.HistogramCalibrator(8, None, False, num_bins=256, skip_zeros=skip_zeros, torch_hist=False)
    for x in batches:
        cal.collect(x)
    hist, edges = _numpy_collect(batches, 256, skip_zeros)
    assert cal._calib_bin_edges.dtype == edges.dtype  # float32, float64 once grown (numpy's arange)
    np.testing.assert_array_equal(cal._calib_bin_edges, edges)
    np.testing.assert_array_equal(cal._calib_hist, hist)
    assert cal._calib_bin_edges[0] > 0  # the numpy range starts at the data's minimum, not 0


def _percentile(hist, edges, p):
    cdf = np.cumsum(hist / hist.sum())
    return torch.tensor(edges[np.searchsorted(cdf, p / 100)].item()).item()  # its float32 tensor


def _entropy(hist, edges, num_bits=8, start_bin=128):
    """The predecessor's KL search (scipy.stats.entropy written with numpy)."""
    bins = hist.copy()
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1)
    divergences = []
    for i in range(start_bin, len(bins) + 1):
        space = np.linspace(0, i, num=nbins + 1)
        dig = np.digitize(range(i), space) - 1
        dig[bins[:i] == 0] = -1
        q_counts = np.zeros(nbins)
        for idx, d in enumerate(dig):
            if d != -1:
                q_counts[d] += bins[idx]
        for key in set(dig.tolist()) - {-1}:
            q_counts[key] /= np.count_nonzero(dig == key)
        q = np.array([q_counts[d] if d != -1 else 0.0 for d in dig])
        p = np.array(bins[:i], dtype=np.float64)
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        divergences.append(terms.sum())
    divergences = np.array(divergences)
    last = len(divergences) - 1 - np.argmin(divergences[::-1])
    return torch.tensor(edges[last + start_bin].item()).item()


def _mse(hist, edges, start_bin=128):
    counts = torch.from_numpy(hist).float()
    e = torch.from_numpy(edges).float()
    centers = (e[1:] + e[:-1]) / 2
    mses = []
    for i in range(start_bin, len(centers)):
        scale = 127 / centers[i]
        q = torch.clamp(torch.round(centers * scale), -127, 127) / scale
        mses.append(float(((q - centers) ** 2 * counts).mean()))
    return mses, centers


@pytest.mark.parametrize("seed", [0, 1])
def test_amax_searches_read_the_numpy_edges(seed):
    batches = _batches(seed)
    cal = calib.HistogramCalibrator(8, None, False, num_bins=256, torch_hist=False)
    for x in batches:
        cal.collect(x)
    hist, edges = _numpy_collect(batches, 256)
    for p in (99.0, 99.9, 99.99):
        assert cal.compute_amax("percentile", percentile=p).item() == _percentile(hist, edges, p)
    assert cal.compute_amax("entropy").item() == _entropy(hist, edges)
    mses, centers = _mse(hist, edges)
    got = cal.compute_amax("mse")
    assert got.dtype == torch.float32
    i = int(np.argmin(mses))
    # The error is summed in float64 here, in float32 there: the same candidate up to float32 ties.
    k = int((centers == got).nonzero()[0, 0]) - 128
    assert k == i or mses[k] <= mses[i] * (1 + 1e-6)


def test_flag_set_after_construction_as_scripts_do():
    """NVIDIA's recipe sets `_calibrator._torch_hist` on quantizers it has made; the path follows the flag."""
    x = torch.rand(1000) + 0.5
    q = quant_nn.TensorQuantizer(QuantDescriptor(calib_method="histogram"))
    q._calibrator._torch_hist = False
    q.disable_quant()
    q.enable_calib()
    q(x)
    q.load_calib_amax("percentile", percentile=99.9)
    hist, edges = _numpy_collect([x], 2048)
    assert q.amax.item() == _percentile(hist, edges, 99.9)
    t = calib.HistogramCalibrator(8, None, False, torch_hist=True)
    t.collect(x)
    assert t._calib_bin_edges[0] == 0  # the torch path starts at 0


def test_reset_pickle_and_constant_input():
    import pickle
    cal = calib.HistogramCalibrator(8, None, False, num_bins=256, torch_hist=False)
    cal.collect(torch.full((10,), 2.0))  # min == max: numpy widens the range by 0.5 each side
    hist, edges = _numpy_collect([torch.full((10,), 2.0)], 256)
    np.testing.assert_array_equal(cal._calib_bin_edges, edges)
    np.testing.assert_array_equal(cal._calib_hist, hist)
    back = pickle.loads(pickle.dumps(cal))
    np.testing.assert_array_equal(back._calib_hist, hist)
    cal.reset()
    assert not cal.has_data() and cal._calib_hist is None
    with pytest.raises(ValueError, match="NaN or Inf"):
        cal.collect(torch.tensor([1.0, float("nan")]))
