// torchqat::calibrate's steps: switch every enabled quantizer to a fresh calibrator, count batches,
// then restore the switches and load all amax at once.
#include "torchqat/calibrate.h"

#include <c10/util/Exception.h>

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "torchqat/calib/distributed.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/max_calibrator.h"
#include "calib/auto_choice.h"
#include "torchqat/calib/method.h"

namespace torchqat {
namespace {

constexpr const char* kWhat = "torchqat::calibrate";

bool per_channel(const TensorQuantizerImpl& q) { return q.desc().axis() && !q.desc().axis()->empty(); }

// A calibrator with no statistics; a histogram keeps the bins / skip_zeros of one set by hand.
calib::CalibratorPtr fresh_calibrator(const TensorQuantizerImpl& q, const std::string& method) {
  const auto& d = q.desc();
  if (!calib::uses_histogram(method, per_channel(q))) {
    return std::make_shared<calib::MaxCalibrator>(d.num_bits(), d.axis().value_or(std::vector<int64_t>{}),
                                                  d.is_unsigned());
  }
  int64_t bins = 2048;
  bool skip_zeros = false;
  if (auto old = std::dynamic_pointer_cast<calib::HistogramCalibrator>(q.calibrator())) {
    bins = old->num_bins();
    skip_zeros = old->skip_zeros();
  }
  // format: an FP8 E4M3 quantizer's mse search quantizes to E4M3.
  return std::make_shared<calib::HistogramCalibrator>(d.num_bits(), std::nullopt, d.is_unsigned(), bins, skip_zeros,
                                                      d.format());
}

bool distributed(const CalibrateOptions& o) { return o.process_group() && o.process_group()->getSize() > 1; }

void check_options(const CalibrateOptions& o) {
  calib::check_calibrate_method(o.method(), kWhat);
  TORCH_CHECK_VALUE(o.auto_batches() >= 1, kWhat, ": auto_batches must be >= 1, got ", o.auto_batches());
  TORCH_CHECK_VALUE(!o.num_batches() || *o.num_batches() >= 1, kWhat,
                    ": num_batches must be std::nullopt or >= 1, got ", o.num_batches().value_or(0));
  if (o.method() == "percentile") {
    TORCH_CHECK_VALUE(o.percentile() > 0.0 && o.percentile() <= 100.0, kWhat, ": percentile must be in (0, 100], got ",
                      o.percentile(), " (out of range)");
  }
  if (o.method() == "entropy" || o.method() == "mse") {
    TORCH_CHECK_VALUE(o.stride() >= 1, kWhat, ": stride must be >= 1, got ", o.stride());
    TORCH_CHECK_VALUE(o.start_bin() >= 1, kWhat, ": start_bin must be >= 1, got ", o.start_bin());
  }
  TORCH_CHECK_VALUE(!distributed(o) || o.method() != "auto", kWhat,
                    ": method 'auto' is not supported with a process_group of size > 1 (its per-layer errors are "
                    "measured on one process); use 'max', 'entropy', 'percentile' or 'mse'");
}

// Rethrows e with the quantizer's name in front, keeping its class (ValueError stays ValueError).
[[noreturn]] void rethrow_for(const std::string& name, const c10::Error& e) {
  if (dynamic_cast<const c10::ValueError*>(&e)) {
    TORCH_CHECK_VALUE(false, kWhat, ": calibrating quantizer '", name, "': ", e.what_without_backtrace());
  }
  TORCH_CHECK(false, kWhat, ": calibrating quantizer '", name, "': ", e.what_without_backtrace());
}

}  // namespace

Calibration::Calibration(torch::nn::Module& module, CalibrateOptions options, std::optional<int64_t> total)
    : module_(module), options_(std::move(options)), total_(total) {
  check_options(options_);
  for (auto& e : quantizers(module_)) {
    if (!e.quantizer->disabled()) quantizers_.push_back(std::move(e));
  }
  TORCH_CHECK_VALUE(!quantizers_.empty(), kWhat,
                    ": the module has no enabled torchqat::TensorQuantizer to calibrate (replace_with_quant_modules "
                    "first, or enable its quantizers)");
  switches_.emplace(module_);
  for (const auto& m : module_.modules(/*include_self=*/true)) training_.emplace_back(m, m->is_training());
  for (auto& e : quantizers_) {
    auto cal = fresh_calibrator(*e.quantizer, options_.method());
    if (options_.method() == "auto") {
      if (auto h = std::dynamic_pointer_cast<calib::HistogramCalibrator>(cal)) {
        cal = std::make_shared<calib::detail::RecordingCalibrator>(h, batch_index_, options_.auto_batches());
      }
    }
    if (auto h = std::dynamic_pointer_cast<calib::HistogramCalibrator>(cal); h && distributed(options_)) {
      h->set_range_agreement(calib::range_agreement(options_.process_group()));
    }
    e.quantizer->set_calibrator(cal);
    e.quantizer->disable_quant();
    e.quantizer->enable_calib();
  }
  module_.eval();
  start_ = std::chrono::steady_clock::now();
}

Calibration::~Calibration() { restore(); }

void Calibration::restore() {
  if (restored_) return;
  restored_ = true;
  switches_.reset();
  for (auto& [m, training] : training_) m->train(training);  // train() recurses; parents come first
}

bool Calibration::done() const { return options_.num_batches() && batches_ >= *options_.num_batches(); }

void Calibration::step() {
  *batch_index_ = ++batches_;
  if (options_.progress()) print_progress(false);
}

void Calibration::print_progress(bool last) const {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::ostringstream line;
  line << "\rcalibrating: " << batches_;
  if (total_) line << "/" << *total_;
  line << " batches, " << std::fixed << std::setprecision(1) << s << " s";
  if (last) line << ", " << quantizers_.size() << " quantizers (" << options_.method() << ")\n";
  std::cerr << line.str() << std::flush;
}

void Calibration::finish() {
  TORCH_CHECK(!restored_, kWhat, ": finish() was already called");
  restore();
  if (options_.progress()) print_progress(true);
  if (distributed(options_)) {
    std::vector<calib::NamedCalibrator> cals;
    for (auto& e : quantizers_) cals.push_back({e.name, e.quantizer->calibrator()});
    calib::merge_across_ranks(cals, *options_.process_group());
  }
  // Every amax first: an error (or a strict quantizer without data) leaves all amax as they were.
  std::vector<std::pair<TensorQuantizerImpl*, at::Tensor>> loads;
  std::vector<QuantizerEntry> chosen_later;  // "auto": measured once the weights have their amax
  for (auto& e : quantizers_) {
    auto& q = *e.quantizer;
    auto cal = q.calibrator();
    if (std::dynamic_pointer_cast<calib::detail::RecordingCalibrator>(cal)) {
      chosen_later.push_back(e);
      continue;
    }
    const bool histogram = std::dynamic_pointer_cast<calib::HistogramCalibrator>(cal) != nullptr;
    calib::AmaxOptions o;
    o.method = histogram ? calib::histogram_search(options_.method()) : "max";
    o.percentile = options_.percentile();
    o.start_bin = options_.start_bin();
    o.stride = options_.stride();
    std::optional<at::Tensor> amax;
    try {
      amax = cal->compute_amax(o);
    } catch (const c10::Error& err) {
      rethrow_for(e.name, err);
    }
    if (!amax) {
      TORCH_CHECK(!options_.strict(), kWhat, ": quantizer '", e.name, "' saw no data (no batch reached it; ",
                  batches_, " batches run); pass strict(false) to leave its amax as it is");
      TORCH_WARN(kWhat, ": quantizer '", e.name, "' saw no data; its amax is left as it was");
      continue;
    }
    if (q.has_amax()) {
      TORCH_CHECK(q.amax().sizes() == amax->sizes(), kWhat, ": calibrating quantizer '", e.name, "': amax shape ",
                  q.amax().sizes(), " cannot change to ", amax->sizes());
    }
    loads.emplace_back(&q, *amax);
  }
  for (auto& [q, amax] : loads) q->set_amax(amax);
  if (chosen_later.empty()) return;
  auto_choices_ = calib::detail::choose_amax(module_, chosen_later, options_.strict());
  if (options_.progress() && !auto_choices_.empty()) {
    std::cerr << "torchqat::calibrate(method auto): per-quantizer choice (errors: mean squared output error of the "
                 "layer)\n"
              << auto_report(auto_choices_) << "\n";
  }
}

std::string auto_report(const std::vector<AutoChoice>& choices) {
  const char* labels[] = {"mse", "max", "percentile 99.999", "percentile 99.99", "percentile 99.9", "entropy"};
  size_t width = 9;
  for (const auto& c : choices) width = std::max(width, c.quantizer.size());
  auto pad_left = [](const std::string& x, size_t w) { return std::string(w > x.size() ? w - x.size() : 0, ' ') + x; };
  auto pad_right = [](const std::string& x, size_t w) { return x + std::string(w > x.size() ? w - x.size() : 0, ' '); };
  auto g4 = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.4g", v);
    return std::string(buf);
  };
  std::ostringstream s;
  s << pad_right("quantizer", width) << "  " << pad_right("kept", 17) << " " << pad_left("amax", 10) << "  ";
  for (size_t i = 0; i < 6; ++i) s << (i ? "  " : "") << pad_left(labels[i], 17);
  for (const auto& c : choices) {
    s << "\n" << pad_right(c.quantizer, width) << "  " << pad_right(c.method, 17) << " " << pad_left(g4(c.amax), 10)
      << "  ";
    for (size_t i = 0; i < 6; ++i) {
      std::string cell = "-";
      for (const auto& k : c.candidates) {
        if (k.method == labels[i]) cell = g4(k.error);
      }
      s << (i ? "  " : "") << pad_left(cell, 17);
    }
  }
  return s.str();
}

}  // namespace torchqat
