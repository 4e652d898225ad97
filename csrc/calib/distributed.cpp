// Merging calibrators across c10d ranks (see torchqat/calib/distributed.h): one signature check,
// then one collective per statistic kind for all calibrators at once.
#include "torchqat/calib/distributed.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cmath>
#include <optional>

#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/max_calibrator.h"

namespace torchqat {
namespace calib {
namespace {

constexpr const char* kWhat = "torchqat::calibrate(process_group)";
constexpr int64_t kMaxDims = 8;  // running-max shapes travel as (dim, sizes padded to kMaxDims)

at::Device collective_device(c10d::ProcessGroup& group) {
  if (group.getBackendName() == "nccl") return at::Device(at::kCUDA)  /* the current CUDA device */;
  return at::Device(at::kCPU);
}

void all_reduce(c10d::ProcessGroup& group, at::Tensor& t, c10d::ReduceOp::RedOpType op) {
  std::vector<at::Tensor> v{t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp(op);
  group.allreduce(v, o)->wait();
}

std::vector<at::Tensor> all_gather(c10d::ProcessGroup& group, const at::Tensor& t) {
  std::vector<at::Tensor> in{t};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < group.getSize(); ++r) out[0].push_back(at::empty_like(t));
  group.allgather(out, in)->wait();
  return out[0];
}

// Per calibrator: kind (0 max, 1 histogram), name hash, has data, dim, sizes (running max only).
at::Tensor signature(const std::vector<NamedCalibrator>& cals) {
  at::Tensor s = at::zeros({static_cast<int64_t>(cals.size()), 4 + kMaxDims}, at::kLong);
  auto a = s.accessor<int64_t, 2>();
  for (size_t i = 0; i < cals.size(); ++i) {
    a[i][1] = static_cast<int64_t>(std::hash<std::string>{}(cals[i].name) >> 1);
    if (auto m = std::dynamic_pointer_cast<MaxCalibrator>(cals[i].calibrator)) {
      const at::Tensor& amax = m->calib_amax();
      a[i][2] = amax.defined();
      if (!amax.defined()) continue;
      TORCH_CHECK_VALUE(amax.dim() <= kMaxDims, kWhat, ": quantizer '", cals[i].name, "': a running max of ",
                        amax.dim(), " dims cannot be merged (at most ", kMaxDims, ")");
      a[i][3] = amax.dim();
      for (int64_t d = 0; d < amax.dim(); ++d) a[i][4 + d] = amax.size(d);
    } else if (std::dynamic_pointer_cast<HistogramCalibrator>(cals[i].calibrator)) {
      a[i][0] = 1;
    } else {
      TORCH_CHECK_VALUE(false, kWhat, ": quantizer '", cals[i].name, "' has a ", cals[i].calibrator->name(),
                        ", which cannot be merged across ranks (only MaxCalibrator and HistogramCalibrator)");
    }
  }
  return s;
}

// Checks that every rank holds the same calibrators; returns each running max's agreed shape.
std::vector<std::optional<std::vector<int64_t>>> check_ranks(const std::vector<NamedCalibrator>& cals, c10d::ProcessGroup& g) {
  const auto n = static_cast<int64_t>(cals.size());
  auto counts = all_gather(g, at::full({1}, n, at::kLong).to(collective_device(g)));
  for (int r = 0; r < g.getSize(); ++r) {
    const int64_t theirs = counts[r].item<int64_t>();
    TORCH_CHECK_VALUE(theirs == n, kWhat, ": ranks disagree on the number of quantizers to calibrate: rank ",
                      g.getRank(), " has ", n, ", rank ", r, " has ", theirs,
                      " (every rank must calibrate the same model)");
  }
  const at::Tensor mine = signature(cals);
  auto all = all_gather(g, mine.to(collective_device(g)));
  std::vector<std::optional<std::vector<int64_t>>> shapes(cals.size());
  for (int r = 0; r < g.getSize(); ++r) {
    const at::Tensor theirs = all[r].cpu();
    auto a = theirs.accessor<int64_t, 2>();
    auto m = mine.accessor<int64_t, 2>();
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK_VALUE(a[i][0] == m[i][0] && a[i][1] == m[i][1], kWhat, ": ranks disagree on quantizer ", i,
                        " ('", cals[i].name, "' with a ", m[i][0] ? "HistogramCalibrator" : "MaxCalibrator",
                        " on rank ", g.getRank(), "): rank ", r, " has another quantizer name or calibrator kind");
      if (m[i][0] != 0 || !a[i][2]) continue;
      std::vector<int64_t> shape(&a[i][4], &a[i][4] + a[i][3]);
      TORCH_CHECK_VALUE(!shapes[i] || *shapes[i] == shape, kWhat, ": quantizer '", cals[i].name,
                        "': ranks collected running max of different shapes ", c10::IntArrayRef(*shapes[i]), " and ",
                        c10::IntArrayRef(shape));
      shapes[i] = shape;
    }
  }
  return shapes;
}

}  // namespace

at::Tensor rebin_counts(const at::Tensor& counts, double width, double new_width) {
  TORCH_CHECK_VALUE(width > 0 && new_width >= width, "rebin_counts: new_width must be >= width > 0, got ", width,
                    " and ", new_width);
  const at::Tensor idx =
      at::floor(at::arange(counts.numel(), counts.options().dtype(at::kDouble)) * width / new_width).to(at::kLong);
  at::Tensor out = at::zeros({idx.max().item<int64_t>() + 1}, counts.options());
  return out.index_add_(0, idx, counts);
}

std::function<double(double)> range_agreement(c10::intrusive_ptr<c10d::ProcessGroup> group) {
  return [group](double vmax) {
    at::Tensor m = at::full({1}, vmax, at::kDouble).to(collective_device(*group));
    all_reduce(*group, m, c10d::ReduceOp::MAX);
    return m.item<double>();
  };
}

void merge_across_ranks(const std::vector<NamedCalibrator>& cals, c10d::ProcessGroup& g) {
  if (g.getSize() <= 1) return;
  torch::NoGradGuard no_grad;
  const auto shapes = check_ranks(cals, g);
  const at::Device dev = collective_device(g);
  std::vector<std::shared_ptr<MaxCalibrator>> maxes;
  std::vector<at::Tensor> amaxes;
  std::vector<std::vector<int64_t>> max_shapes;
  std::vector<std::shared_ptr<HistogramCalibrator>> hists;
  for (size_t i = 0; i < cals.size(); ++i) {
    if (auto m = std::dynamic_pointer_cast<MaxCalibrator>(cals[i].calibrator)) {
      if (!shapes[i]) continue;  // no rank saw data
      maxes.push_back(m);
      max_shapes.push_back(*shapes[i]);
      amaxes.push_back(m->calib_amax().defined() ? m->calib_amax().to(at::kFloat).flatten().to(dev)
                                                  : at::zeros({c10::multiply_integers(*shapes[i])}, dev));
    } else {
      hists.push_back(std::dynamic_pointer_cast<HistogramCalibrator>(cals[i].calibrator));
    }
  }
  // Running max: every amax in one tensor, MAX.
  if (!maxes.empty()) {
    at::Tensor flat = at::cat(amaxes);
    all_reduce(g, flat, c10d::ReduceOp::MAX);
    int64_t off = 0;
    for (size_t k = 0; k < maxes.size(); ++k) {
      const at::Tensor& old = maxes[k]->calib_amax();
      at::Tensor merged = flat.narrow(0, off, amaxes[k].numel()).view(max_shapes[k]);
      off += amaxes[k].numel();
      maxes[k]->set_calib_amax(old.defined() ? merged.to(old.device(), old.scalar_type()) : merged.cpu());
    }
  }
  if (hists.empty()) return;
  // Histograms: the widest bin width (and the narrowest, to warn), then the summed counts.
  const auto h = static_cast<int64_t>(hists.size());
  at::Tensor widths = at::empty({2 * h}, at::kDouble);
  for (int64_t k = 0; k < h; ++k) {
    const double w = hists[k]->histogram().defined() ? hists[k]->bin_width() : 0.0;
    widths[k] = w;
    widths[h + k] = -w;
  }
  widths = widths.to(dev);
  all_reduce(g, widths, c10d::ReduceOp::MAX);
  widths = widths.cpu();
  std::vector<at::Tensor> counts(h);
  at::Tensor lengths = at::zeros({h}, at::kLong);
  for (int64_t k = 0; k < h; ++k) {
    const auto& cal = *hists[k];
    const double w = widths[k].item<double>();
    if (w == 0.0) continue;  // no rank saw a non-zero value
    at::Tensor c = cal.histogram().defined() ? cal.histogram().cpu() : at::zeros({1}, at::kLong);
    if (!cal.histogram().defined() && !cal.skip_zeros()) c[0] = cal.pending_zeros();  // zeros: bin 0 everywhere
    if (cal.histogram().defined() && cal.bin_width() != w) {
      TORCH_WARN(kWhat, ": ranks binned with different widths (", -widths[h + k].item<double>(), " .. ", w,
                 "); re-binning onto the widest, which is approximate");
      c = rebin_counts(c, cal.bin_width(), w);
    }
    counts[k] = c;
    lengths[k] = c.numel();
  }
  lengths = lengths.to(dev);
  all_reduce(g, lengths, c10d::ReduceOp::MAX);
  lengths = lengths.cpu();
  std::vector<at::Tensor> padded;
  for (int64_t k = 0; k < h; ++k) {
    if (!counts[k].defined()) continue;
    at::Tensor p = at::zeros({lengths[k].item<int64_t>()}, at::kLong);
    p.narrow(0, 0, counts[k].numel()).copy_(counts[k]);
    padded.push_back(p);
  }
  if (padded.empty()) return;
  at::Tensor sum = at::cat(padded).to(dev);
  all_reduce(g, sum, c10d::ReduceOp::SUM);
  sum = sum.cpu();
  int64_t off = 0;
  for (int64_t k = 0; k < h; ++k) {
    if (!counts[k].defined()) continue;
    const int64_t n = lengths[k].item<int64_t>();
    const at::Device home = hists[k]->histogram().defined() ? hists[k]->histogram().device() : at::Device(at::kCPU);
    hists[k]->set_state(sum.narrow(0, off, n).to(home), widths[k].item<double>());
    off += n;
  }
}

}  // namespace calib
}  // namespace torchqat
