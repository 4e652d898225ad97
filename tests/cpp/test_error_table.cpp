// docs/errors.md drives this test: every row tested in cpp (or both) has a case here, keyed by its
// id, that must throw the documented c10 type (or TORCH_WARN, "c10::Warning") with the documented
// message fragment; a case without a row fails too. The doc is read at run time. (Plain CHECK is
// c10's fatal macro once torch is included: use CHECK_THAT / CHECK_FALSE / REQUIRE.)
#include "thread_group.h"  // c10d headers before Catch (c10's CHECK)
#include "catch_torch.h"
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <typeinfo>

#include "torchqat/build_info.h"
#include "torchqat/calibrate.h"
#include "torchqat/checkpoint.h"
#include "torchqat/fold_bn.h"
#include "torchqat/calib/amax_search.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/max_calibrator.h"
#include "torchqat/calib/stats.h"
#include "torchqat/nn/quant_concat.h"
#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_lstm.h"
#include "torchqat/nn/replace.h"
#include "torchqat/onnx/export.h"
#include "torchqat/onnx/implicit.h"
#include "torchqat/ops.h"
#include "torchqat/tensor_quantizer.h"
#include "torchqat/share_scales.h"
#include "torchqat/tools/distill.h"
#include "torchqat/tools/sensitivity.h"
#include "onnx_test_model.h"
#include "skip.h"

#ifndef TORCHQAT_SOURCE_DIR
#error "TORCHQAT_SOURCE_DIR (the repository root) must be defined; tests/cpp/CMakeLists.txt does it"
#endif

namespace {

using torchqat::QuantDescriptor;
using torchqat::TensorQuantizer;
using torchqat::calib::AmaxOptions;
using torchqat::calib::HistogramCalibrator;
using torchqat::calib::MaxCalibrator;
namespace tqnn = torchqat::nn;

struct Row {
  std::string id, tested, cpp_type, fragment;
};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Rows of the doc's tables: "| E01 | both | entry | input | Python | C++ | `fragment` |".
std::vector<Row> read_rows() {
  const std::string path = std::string(TORCHQAT_SOURCE_DIR) + "/docs/errors.md";
  std::ifstream in(path);
  REQUIRE(in.good());
  std::vector<Row> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| E", 0) != 0) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line.substr(1));
    for (std::string c; std::getline(ss, c, '|');) cells.push_back(trim(c));
    if (!cells.empty() && cells.back().empty()) cells.pop_back();
    INFO(line);
    REQUIRE(cells.size() == 7);
    std::string frag = cells[6];
    REQUIRE((frag.size() >= 2 && frag.front() == '`' && frag.back() == '`'));
    rows.push_back({cells[0], cells[1], cells[5], frag.substr(1, frag.size() - 2)});
  }
  REQUIRE(!rows.empty());
  return rows;
}

bool tested_in_cpp(const Row& r) { return r.tested.rfind("cpp", 0) == 0 || r.tested.rfind("both", 0) == 0; }

struct WarningCollector : c10::WarningHandler {
  std::vector<std::string> messages;
  void process(const c10::Warning& w) override { messages.push_back(w.msg()); }
};

// The exact class, as Python sees it: c10::Error means that class, not a subclass.
std::string type_name(const c10::Error& e) {
  if (dynamic_cast<const c10::ValueError*>(&e)) return "c10::ValueError";
  if (dynamic_cast<const c10::TypeError*>(&e)) return "c10::TypeError";
  if (typeid(e) == typeid(c10::Error)) return "c10::Error";
  return std::string("another c10 error: ") + typeid(e).name();
}

// (type, message) of what f does: the exception it throws, else its warnings, else "no error".
std::pair<std::string, std::string> outcome(const std::function<void()>& f) {
  WarningCollector warnings;
  c10::WarningUtils::WarningHandlerGuard guard(&warnings);
  try {
    f();
  } catch (const c10::Error& e) {
    return {type_name(e), e.what_without_backtrace()};
  } catch (const std::exception& e) {
    return {"std::exception", e.what()};
  }
  if (warnings.messages.empty()) return {"no error", ""};
  std::string all;
  for (const auto& m : warnings.messages) all += m + "\n";
  return {"c10::Warning", all};
}

const at::Tensor X = torch::randn({4, 3});

void fq(const at::Tensor& x, const at::Tensor& amax, int64_t bits = 8, std::optional<int64_t> axis = std::nullopt) {
  torchqat::fake_quant(x, amax, bits, false, false, axis);
}
at::Tensor scalar(float v) { return torch::tensor(v); }
const float kNaN = std::nanf("");
const float kInf = std::numeric_limits<float>::infinity();

void hist(const at::Tensor& x, at::Tensor h, double width) { torchqat::histogram_abs(x, h, width); }

AmaxOptions opts(const std::string& method, double percentile = 99.99, int64_t stride = 1, int64_t start_bin = 128) {
  AmaxOptions o;
  o.method = method;
  o.percentile = percentile;
  o.stride = stride;
  o.start_bin = start_bin;
  return o;
}

void hist_amax(const AmaxOptions& o) {
  HistogramCalibrator c;
  c.collect(X);
  c.compute_amax(o);
}

std::shared_ptr<torch::nn::Module> linear_model() { return torch::nn::Sequential(torch::nn::Linear(2, 2)).ptr(); }

// A custom module whose forward calls a member: replacing its child would be invisible to it.
struct HeldNetImpl : torch::nn::Module {
  HeldNetImpl() : conv(register_module("conv", torch::nn::Conv2d(3, 4, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return conv(x); }
  torch::nn::Conv2d conv;
};
TORCH_MODULE(HeldNet);

void truncated_checkpoint() {
  tqnn::QuantConv2d m(torch::nn::Conv2dOptions(3, 4, 3));
  std::stringstream full;
  torch::save(m, full);
  std::istringstream cut(full.str().substr(0, 100));
  torch::load(m, cut);
}

// A pickled dict of names to tensors, as torch::pickle_save (or Python's torch.save of a dict) writes it.
std::string pickled(const std::vector<std::pair<std::string, at::Tensor>>& entries) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, v] : entries) d.insert(k, v);
  const auto bytes = torch::pickle_save(d);
  return std::string(bytes.begin(), bytes.end());
}

// load_checkpoint into a fresh QuantConv2d(3, 4, 3): keys weight, bias, and the amax of its
// two quantizers, which have none yet (the weight one per channel along axis 0).
void load_conv(const std::string& bytes) {
  tqnn::QuantConv2d m(torch::nn::Conv2dOptions(3, 4, 3));
  std::istringstream in(bytes);
  torchqat::load_checkpoint(*m, in);
}
std::string conv_ckpt(const at::Tensor& input_amax, const at::Tensor& weight_amax = torch::ones({4})) {
  return pickled({{"weight", torch::ones({4, 3, 3, 3})}, {"bias", torch::zeros({4})},
                  {"_input_quantizer._amax", input_amax}, {"_weight_quantizer._amax", weight_amax}});
}

// torchqat::calibrate on the ONNX test model with options o, over `batches` random batches.
void calibrate_tiny(const torchqat::CalibrateOptions& o, int batches = 1) {
  torchqat_test::TinyResNet model;
  std::vector<at::Tensor> data;
  for (int i = 0; i < batches; ++i) data.push_back(torch::randn({2, 3, 8, 8}));
  torchqat::calibrate(model, data, torchqat::CalibrateOptions(o).progress(false));
}
at::Tensor no_tensor() { return at::Tensor(); }
// calibrate(method) on two ranks (threads) whose models differ as rank1_model says; throws rank 0's error.
void calibrate_two_ranks(const std::function<torch::nn::Sequential(int rank)>& model, const char* method = "max") {
  torchqat_test::run_ranks(2, [&](int rank, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    auto m = model(rank);
    torchqat::calibrate(m, std::vector<at::Tensor>{torch::randn({4, 4})},
                        torchqat::CalibrateOptions().method(method).progress(false).process_group(group));
  });
}
torch::nn::Sequential linears(int64_t hidden) {
  return torch::nn::Sequential(tqnn::QuantLinear(4, hidden), tqnn::QuantLinear(hidden, 4));
}
// One QuantLinear in a Sequential: the layer "0".
torch::nn::Sequential quant_linear_model() { return torch::nn::Sequential(tqnn::QuantLinear(2, 2)); }

// export_tensorrt_implicit of a calibrated QuantLinear into the temp folder; input_amax shapes its
// input quantizer's amax ({} = per tensor).
void implicit_export(const std::string& onnx_name, const std::string& header,
                     std::vector<int64_t> input_amax_shape = {}) {
  auto m = quant_linear_model();
  auto fc = m->ptr(0)->as<tqnn::QuantLinearImpl>();
  fc->input_quantizer()->set_amax(torch::ones(input_amax_shape));
  fc->weight_quantizer()->set_amax(torch::ones({2, 1}));
  const std::string dir = std::filesystem::temp_directory_path().string();
  torchqat::onnx::export_tensorrt_implicit(m, {torch::randn({3, 2})}, onnx_name.empty() ? "" : dir + "/" + onnx_name,
                                           dir + "/torchqat_error_table.cache", {}, header);
}

// export_model of a QuantLinear(2, 2) in a Sequential with these descriptors (each with an amax).
void export_linear(const torchqat::QuantDescriptor& input, const torchqat::QuantDescriptor& weight) {
  torch::nn::Sequential m(tqnn::QuantLinear(torch::nn::LinearOptions(2, 2), input, weight));
  torchqat::onnx::export_model(m, {torch::randn({3, 2})},
                               (std::filesystem::temp_directory_path() / "torchqat_error_table_linear.onnx").string());
}
torchqat::QuantDescriptor with_amax(torchqat::QuantDescriptor d) { return d.amax(std::vector<float>{1.0f}); }

const std::map<std::string, std::function<void()>>& cases() {
  static const std::map<std::string, std::function<void()>> c = {
      {"E230", [] { calibrate_tiny(torchqat::CalibrateOptions().method("kl")); }},
      {"E231", [] { calibrate_tiny(torchqat::CalibrateOptions().num_batches(0)); }},
      {"E249", [] { calibrate_tiny(torchqat::CalibrateOptions().method("auto").auto_batches(0)); }},
      {"E300", [] {
         calibrate_two_ranks([](int rank) {
           auto m = linears(3);
           if (rank == 1) m->push_back(tqnn::QuantLinear(4, 4));
           return m;
         });
       }},
      {"E301", [] {
         calibrate_two_ranks([](int rank) {
           if (rank == 0) return linears(3);
           return torch::nn::Sequential(torch::nn::Identity(), tqnn::QuantLinear(4, 3), tqnn::QuantLinear(3, 4));
         });
       }},
      {"E302", [] { calibrate_two_ranks([](int rank) { return linears(rank == 1 ? 2 : 3); }); }},
      {"E303", [] { calibrate_two_ranks([](int) { return linears(3); }, "auto"); }},
      {"E256", [] { implicit_export("", torchqat::onnx::kDefaultCacheHeader); }},
      {"E257", [] { implicit_export("torchqat_error_table.onnx", "TRT-8XXX\nEntropyCalibration2"); }},
      {"E258", [] { implicit_export("torchqat_error_table.onnx", torchqat::onnx::kDefaultCacheHeader, {1, 2}); }},
      {"E260", [] { export_linear(with_amax(QuantDescriptor()), with_amax(QuantDescriptor().num_bits(4))); }},
      {"E261", [] { export_linear(with_amax(QuantDescriptor().num_bits(4)), with_amax(QuantDescriptor())); }},
      {"E232",
       [] {
         torch::nn::Sequential m(torch::nn::Linear(2, 2));
         torchqat::calibrate(m, std::vector<at::Tensor>{torch::ones({1, 2})});
       }},
      {"E233", [] { calibrate_tiny(torchqat::CalibrateOptions(), 0); }},
      {"E234", [] { calibrate_tiny(torchqat::CalibrateOptions().strict(false), 0); }},
      {"E235", [] { calibrate_tiny(torchqat::CalibrateOptions().method("percentile").percentile(0)); }},
      {"E236", [] { calibrate_tiny(torchqat::CalibrateOptions().method("mse").stride(0)); }},
      {"E237",
       [] {
         torchqat_test::TinyResNet model;
         torchqat::Calibration c(*model, torchqat::CalibrateOptions().progress(false));
         model->forward(torch::randn({2, 3, 8, 8}));
         c.finish();
         c.finish();
       }},
      {"E238", [] { torchqat::fold_conv_bn(*torch::nn::ReLU(), *torch::nn::BatchNorm2d(3)); }},
      {"E239", [] { torchqat::fold_conv_bn(*torch::nn::Conv2d(1, 3, 1), *torch::nn::ReLU()); }},
      {"E240",
       [] {
         torchqat::fold_bn_parameters(torch::ones({3, 1, 1, 1}), no_tensor(), torch::zeros({4}), torch::ones({4}),
                                      no_tensor(), no_tensor(), 1e-5);
       }},
      {"E241",
       [] {
         torchqat::fold_bn_parameters(torch::ones({3, 1, 1, 1}), no_tensor(), no_tensor(), no_tensor(), no_tensor(),
                                      no_tensor(), 1e-5);
       }},
      {"E242",
       [] {
         torch::nn::Sequential m(torch::nn::Conv2d(1, 2, 1),
                                 torch::nn::BatchNorm2d(torch::nn::BatchNormOptions(2).track_running_stats(false)));
         torchqat::fold_bn(*m);
       }},
      {"E243",
       [] {
         tqnn::QuantConv2d conv(torch::nn::Conv2dOptions(1, 2, 1), std::nullopt, QuantDescriptor());
         conv->weight_quantizer()->set_amax(torch::tensor(1.0f));
         torch::nn::Sequential m(conv, torch::nn::BatchNorm2d(2));
         torchqat::fold_bn(*m);
       }},
      {"E244", [] { torchqat::tools::sensitivity(*quant_linear_model(), {}); }},
      {"E245", [] { torchqat::tools::sensitivity(*linear_model(), [] { return 1.0; }); }},
      {"E246",
       [] {
         torchqat::tools::sensitivity(*quant_linear_model(), [] { return 1.0; },
                                      torchqat::tools::SensitivityOptions().layers({"head*"}));
       }},
      {"E247", [] { torchqat::tools::partial_quantize(*quant_linear_model(), [] { return 1.0; }, -1); }},
      {"E248",
       [] {
         torchqat::tools::SensitivityTable t{torchqat::tools::SensitivityMode::kAllButOne, 1, 0, {{1, "fc", 0, 1}}, true};
         torchqat::tools::partial_quantize(*quant_linear_model(), t, 1);
       }},
      {"E270",
       [] {
         auto m = quant_linear_model();
         torchqat::tools::FeatureDistillationLoss(m, m, {"0"});
       }},
      {"E271",
       [] { torchqat::tools::FeatureDistillationLoss(quant_linear_model().ptr(), linear_model(), {"0"}, "max"); }},
      {"E272",
       [] { torchqat::tools::FeatureDistillationLoss(quant_linear_model().ptr(), linear_model(), {"head*"}); }},
      {"E273",
       [] {
         torchqat_test::TinyResNet student, teacher;
         torchqat::tools::FeatureDistillationLoss(student, teacher, {"up"});
       }},
      {"E274",
       [] {
         torch::nn::Sequential student(tqnn::QuantLinear(2, 2), torch::nn::ReLU(), tqnn::QuantLinear(2, 2));
         torchqat::tools::FeatureDistillationLoss(student, torch::nn::Sequential(torch::nn::Linear(2, 2)), {"2"});
       }},
      {"E275",
       [] {
         auto student = quant_linear_model();
         torchqat::tools::FeatureDistillationLoss loss(student.ptr(), linear_model(), {"0"});
         student->forward(torch::ones({1, 2}));
         loss.compute();
       }},
      {"E276",
       [] {
         torchqat_test::TinyResNet model;
         torchqat::tools::float_copy(*model);
       }},
      {"E277",
       [] {
         torchqat::share_scales(quant_linear_model(), {torch::ones({1, 2})},
                                torchqat::ShareScalesOptions().rules({"residual"}));
       }},
      {"E278", [] { torchqat::share_scales(quant_linear_model(), {}); }},
      {"E01", [] { fq(torch::ones({3}, at::kInt), scalar(1)); }},
      {"E190", [] { torchqat::clip(torch::ones({3}, at::kInt), scalar(0), scalar(1)); }},
      {"E191", [] { torchqat::clip(torch::ones({4, 3, 2}), torch::tensor(0), scalar(1)); }},
      {"E192", [] { torchqat::clip(torch::ones({4, 3, 2}), torch::zeros({3}), scalar(1)); }},
      {"E193", [] { torchqat::clip(torch::ones({4, 3, 2}), scalar(0), torch::ones({2, 4, 3, 2})); }},
      {"E194", [] { torchqat::clip_backward(torch::ones({3}), torch::ones({4}), scalar(0), scalar(1), true, true); }},
      {"E02", [] { fq(X, torch::tensor(1)); }},
      {"E03", [] { fq(X, scalar(-1)); }},
      {"E04", [] { fq(X, scalar(kNaN)); }},
      {"E05", [] { fq(X, scalar(kInf)); }},
      {"E06", [] { fq(X, scalar(1), 1); }},
      {"E07", [] { fq(X, scalar(1), 17); }},
      {"E08", [] { fq(X, torch::ones({3}), 8, 5); }},
      {"E09", [] { fq(X, torch::ones({5}), 8, 1); }},
      {"E10", [] { fq(X, torch::ones({4, 1, 1})); }},
      {"E250", [] { fq(X, torch::ones({4, 2})); }},
      {"E12", [] { fq(X.cuda(), scalar(1)); }},
      {"E13", [] { torchqat::quantize(X, scalar(1), 20); }},
      {"E14", [] { torchqat::quantize(X, scalar(kNaN)); }},
      {"E15", [] { torchqat::dequantize(torch::ones({3}), scalar(1)); }},
      {"E16", [] { torchqat::abs_max(torch::empty({0})); }},
      {"E17", [] { torchqat::abs_max(torch::tensor({1.0f, kNaN})); }},
      {"E18", [] { torchqat::abs_max(torch::tensor({1.0f, kInf})); }},
      {"E19", [] { torchqat::abs_max(X, {3}); }},
      {"E20", [] { torchqat::abs_max(torch::ones({3}, at::kInt)); }},
      {"E21", [] { hist(X, torch::zeros({4}), 1.0); }},
      {"E22", [] { hist(X, torch::zeros({2, 2}, at::kLong), 1.0); }},
      {"E23", [] { hist(X, torch::zeros({4}, at::kLong), 0.0); }},
      {"E24", [] { hist(X.cuda(), torch::zeros({4}, at::kLong), 1.0); }},
      {"E25", [] { QuantDescriptor().num_bits(1).validate(); }},
      {"E27", [] { QuantDescriptor().amax(std::vector<float>{-1.0f}).validate(); }},
      {"E28", [] { QuantDescriptor().amax(std::vector<float>{kNaN}).validate(); }},
      {"E29", [] { QuantDescriptor().calib_method("kl").validate(); }},
      {"E211", [] { QuantDescriptor().format(torchqat::QuantFormat::kE4M3).is_unsigned(true).validate(); }},
      {"E212", [] { torchqat::fake_quant_e4m3(X, scalar(-1)); }},
      {"E213", [] { torchqat::fake_quant_e4m3(X.to(torch::kInt), scalar(1)); }},
      {"E214", [] {
         torchqat::calib::HistogramCalibrator cal(8, std::nullopt, false, 2048, false, torchqat::QuantFormat::kE4M3);
         cal.collect(X);
         torchqat::calib::AmaxOptions o;
         o.method = "entropy";
         cal.compute_amax(o);
       }},
      {"E30", [] { QuantDescriptor().scale_amax(0.0).validate(); }},
      {"E33", [] { QuantDescriptor().axis(std::vector<int64_t>{}).validate(); }},
      {"E34", [] { TensorQuantizer()->set_amax(scalar(-1)); }},
      {"E36", [] { TensorQuantizer()->set_amax(scalar(kNaN)); }},
      {"E38",
       [] {
         TensorQuantizer q;
         q->set_amax(scalar(1));
         q->set_amax(torch::ones({2}));
       }},
      {"E39", [] { TensorQuantizer(QuantDescriptor().axis(std::vector<int64_t>{3}).amax(std::vector<float>{1, 2}))(X); }},
      {"E40",
       [] {
         TensorQuantizer q;
         q->enable_calib();
         q->load_calib_amax();
       }},
      {"E41",
       [] {
         TensorQuantizer q;
         q->enable_calib();
         q->load_calib_amax({}, /*strict=*/false);
       }},
      {"E42", [] { TensorQuantizer()->load_calib_amax(); }},
      {"E43", [] { TensorQuantizer()->step_size(); }},
      {"E45", [] { TensorQuantizer(QuantDescriptor().num_bits(1)); }},
      {"E50", [] { TensorQuantizer(QuantDescriptor().axis(std::vector<int64_t>{0}).calib_method("histogram"))->enable_calib(); }},
      {"E51", [] { TensorQuantizer()(torch::empty({0})); }},
      {"E52",
       [] {
         MaxCalibrator c(8, {0});
         c.collect(torch::randn({4, 3}));
         c.collect(torch::randn({5, 3}));
       }},
      {"E53", [] { MaxCalibrator().collect(torch::tensor({kNaN})); }},
      {"E54", [] { MaxCalibrator().collect(torch::tensor({kInf})); }},
      {"E55", [] { MaxCalibrator(8, {3}).collect(X); }},
      {"E56", [] { MaxCalibrator(1); }},
      {"E57", [] { hist_amax(opts("kl")); }},
      {"E58", [] { hist_amax(opts("percentile", 0.0)); }},
      {"E59", [] { hist_amax(opts("percentile", 100.5)); }},
      {"E60", [] { HistogramCalibrator(8, std::nullopt, false, 64); }},
      {"E61", [] { HistogramCalibrator(8, std::nullopt, true, 200); }},
      {"E62", [] { HistogramCalibrator(8, std::vector<int64_t>{0}); }},
      {"E63", [] { hist_amax(opts("entropy", 99.99, 0)); }},
      {"E64", [] { hist_amax(opts("mse", 99.99, 1, 4096)); }},
      {"E65", [] { HistogramCalibrator().collect(torch::tensor({1.0f, kNaN})); }},
      {"E66", [] { HistogramCalibrator().collect(torch::tensor({1.0f, kInf})); }},
      {"E68", [] { HistogramCalibrator().set_state(torch::zeros({4}), 1.0); }},
      {"E69", [] { MaxCalibrator().set_calib_amax(torch::tensor({kNaN})); }},
      {"E267", [] { torchqat::fake_quant_blocked(torch::randn({2, 3, 4}), torch::ones({2, 3, 1}), 4); }},
      {"E268", [] { torchqat::abs_max_blocked(torch::randn({4, 16}), 5); }},
      {"E269", [] { torchqat::fake_quant_blocked(torch::randn({4, 16}), torch::ones({4, 2}), 4); }},
      {"E280", [] { MaxCalibrator().set_calib_amax(torch::tensor({1.0f, -1.0f})); }},
      {"E110", [] { torchqat::calib::amax_percentile({1, -1, 2}, 1.0, 99.0); }},
      {"E124", [] { torchqat::calib::amax_mse({1, 1, 1, 1}, 1e300, 8, false, 1, 1); }},
      {"E140", [] { tqnn::QuantLSTM(torch::nn::LSTMOptions(4, 8).proj_size(2)); }},
      {"E142", [] { tqnn::QuantLSTM(4, 8)(torch::randn({3, 2, 5})); }},
      {"E147",
       [] {
         auto cell = tqnn::QuantLSTMCell(4, 8).ptr();
         auto forward = [cell](const std::vector<at::Tensor>& in) {
           return std::vector<at::Tensor>{std::get<0>(cell->forward(in[0]))};
         };
         torchqat::onnx::export_model(cell, forward, {torch::randn({2, 4})}, "e147_never_written.onnx");
       }},
      {"E252",
       [] {
         tqnn::QuantLinear m(torch::nn::LinearOptions(3, 4), std::nullopt,
                             QuantDescriptor().axis(std::vector<int64_t>{0, 1}));
         m->input_quantizer()->set_amax(scalar(1));
         m->weight_quantizer()->set_amax(torch::ones({4, 3}));
         torchqat::onnx::export_model(m, {torch::randn({2, 3})}, "e252_never_written.onnx");
       }},
      {"E111", [] { HistogramCalibrator().collect(torch::tensor({1.0, 1e39}, torch::kDouble)); }},
      {"E76",
       [] {
         tqnn::replace_with_quant_modules(linear_model(),
                                          tqnn::ReplaceOptions().quant_desc_weight(QuantDescriptor().axis(std::vector<int64_t>{3})));
       }},
      {"E78",
       [] {
         tqnn::replace_with_quant_modules(linear_model(),
                                          tqnn::ReplaceOptions().quant_desc_weight(QuantDescriptor().fake_quant(false)));
       }},
      {"E82", [] { tqnn::replace_with_quant_modules(linear_model(), tqnn::ReplaceOptions().include({"nomatch"})); }},
      {"E83", [] { tqnn::replace_with_quant_modules(linear_model(), tqnn::ReplaceOptions().exclude({"nomatch"})); }},
      {"E87", [] { tqnn::replace_with_quant_modules(torch::nn::Sequential(HeldNet())); }},
      {"E88", [] { tqnn::replace_with_quant_modules(std::shared_ptr<torch::nn::Module>()); }},
      {"E89",
       [] { tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3), std::nullopt, QuantDescriptor().axis(std::vector<int64_t>{5})); }},
      {"E91", [] { tqnn::QuantLinear(torch::nn::LinearOptions(3, 4), QuantDescriptor().fake_quant(false)); }},
      {"E95", [] { tqnn::QuantConcat()->forward(std::vector<at::Tensor>{}); }},
      {"E96", [] { tqnn::QuantLinear(torch::nn::LinearOptions(0, 4)); }},
      {"E109", truncated_checkpoint},
      {"E112", [] { load_conv(conv_ckpt(scalar(1)).substr(0, 200)); }},
      {"E113", [] { load_conv(std::string(64, 'x')); }},
      {"E114",
       [] {
         tqnn::QuantConv2d m(torch::nn::Conv2dOptions(3, 4, 3));
         torchqat::load_checkpoint(*m, std::string("/nonexistent/ckpt.pt"));
       }},
      {"E115", [] { load_conv(conv_ckpt(scalar(kNaN))); }},
      {"E116", [] { load_conv(conv_ckpt(scalar(-1))); }},
      {"E117", [] { load_conv(pickled({{"weight", torch::ones({4, 3, 1, 1})}, {"bias", torch::zeros({4})}})); }},
      {"E118", [] { load_conv(conv_ckpt(scalar(1), torch::ones({3}))); }},
      {"E119", [] { load_conv(conv_ckpt(torch::ones({3}))); }},
      {"E120", [] { load_conv(pickled({{"_input_quantizer._amax", scalar(1)}})); }},
      {"E121",
       [] {
         load_conv(pickled({{"weight", torch::ones({4, 3, 3, 3})}, {"bias", torch::zeros({4})}, {"extra", scalar(1)}}));
       }},
      {"E122",
       [] {
         const auto bytes = torch::pickle_save(torch::ones({2}));
         load_conv(std::string(bytes.begin(), bytes.end()));
       }},
      {"E123", [] { load_conv(conv_ckpt(torch::tensor(1))); }},
  };
  return c;
}

// Checks the rows marked cpp whose `cuda` mark equals cuda_rows; CPU and CUDA rows are separate test
// cases so that a machine without a GPU reports the CUDA one as skipped instead of passing it.
void check_rows(bool cuda_rows) {
  std::set<std::string> rows_seen;
  for (const auto& row : read_rows()) {
    INFO("docs/errors.md row " << row.id);
    REQUIRE(rows_seen.insert(row.id).second);  // ids are unique
    const auto it = cases().find(row.id);
    if (!tested_in_cpp(row)) {
      CHECK_FALSE(it != cases().end());  // a case for a row not marked cpp
      continue;
    }
    if ((row.tested.find("cuda") != std::string::npos) != cuda_rows) continue;
    if (it == cases().end()) {
      FAIL_CHECK("the row has no case in test_error_table.cpp");
      continue;
    }
    const auto [type, message] = outcome(it->second);
    INFO("got " << type << ": " << message);
    CHECK_THAT(type, Catch::Equals(row.cpp_type));
    CHECK_THAT(message, Catch::Contains(row.fragment));
  }
  for (const auto& [id, fn] : cases()) {
    INFO("case " << id);
    CHECK_FALSE(rows_seen.count(id) == 0);  // a case without a row in docs/errors.md
  }
}

}  // namespace

TEST_CASE("every cpp row of docs/errors.md raises as documented", "[errors][doc]") { check_rows(false); }

TEST_CASE("every cpp cuda row of docs/errors.md raises as documented", "[errors][doc][cuda]") {
  if (!(torch::cuda::is_available() && torchqat::cuda_compiled())) TORCHQAT_SKIP("needs a GPU and a CUDA build");
  check_rows(true);
}
