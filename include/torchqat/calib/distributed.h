#pragma once
// Merging calibration statistics across the ranks of a c10d process group, python/torchqat/calib's
// rule in C++ (MaxCalibrator.sync, HistogramCalibrator.sync and its lockstep range):
//  - running max (per tensor or per channel): all-reduced with MAX;
//  - histograms: the bin width all-reduced with MAX, a rank binned with a narrower width re-binned
//    onto it by bin left edge (rebin_counts; approximate, a warning says so), the bin counts padded
//    to the longest and summed. torchqat::calibrate makes every rank bin with one width (the
//    first non-zero batch max all-reduced, range_agreement), so no re-binning is needed there and
//    the merged histogram is the one a single process would build when that width is its own.
// Every rank calls in the same order with the same calibrators (checked first: c10::ValueError).
// Collectives take CPU tensors, CUDA ones for an NCCL group.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <functional>
#include <string>
#include <vector>

#include "torchqat/calib/calibrator.h"

namespace torchqat {
namespace calib {

struct NamedCalibrator {
  std::string name;  // the quantizer's, for errors
  CalibratorPtr calibrator;  // a MaxCalibrator or a HistogramCalibrator
};

// Replaces each calibrator's statistics by the merge over every rank of group. A rank without data
// for a calibrator takes part with none (zeros); ranks disagreeing on the number of calibrators,
// their kind or quantizer name, or a running max's shape raise c10::ValueError, on every rank.
void merge_across_ranks(const std::vector<NamedCalibrator>& calibrators, c10d::ProcessGroup& group);

// The batch max all-reduced with MAX over group: HistogramCalibrator::set_range_agreement's
// function, so every rank fixes one bin width on its first non-zero batch. Every rank must collect
// in step until then (the same number of batches, each reaching the quantizer).
std::function<double(double)> range_agreement(c10::intrusive_ptr<c10d::ProcessGroup> group);

// Moves int64 counts of bins of width into bins of new_width (>= width) by each bin's left edge.
at::Tensor rebin_counts(const at::Tensor& counts, double width, double new_width);

}  // namespace calib
}  // namespace torchqat
