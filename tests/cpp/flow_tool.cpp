// torchqat_flow_tool OUT_DIR: the C++ flow on the ONNX test model (onnx_test_model.h) with fixed
// seeds, for tests/python/test_cpp_flow.py, which runs Python's calibrate and fold_bn on the same
// weights and data and compares. Writes
//   OUT_DIR/model.pt    torch::save of the model before calibration (weights, BN statistics)
//   OUT_DIR/flow.pt     a pickled dict: "batch<i>" the calibration batches, "<method>/<quantizer>"
//                       the amax torchqat::calibrate gave for each method (auto included), and "folded/<name>"
//                       the parameters and amax after torchqat::fold_bn of the mse-calibrated model;
//                       "distill/sum" and "distill/mean" the FeatureDistillationLoss of the
//                       mse-calibrated model (eval mode) against a float teacher with its weights on
//                       batch0, for the layers kDistillLayers
//   OUT_DIR/share_scales.txt  torchqat::share_scales of the YOLO-like block (yolo_block.h): one
//                       line per group, "major|member,member,...|rule+rule"
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "onnx_test_model.h"
#include "yolo_block.h"
#include "torchqat/calibrate.h"
#include "torchqat/fold_bn.h"
#include "torchqat/quantizers.h"
#include "torchqat/share_scales.h"
#include "torchqat/tools/distill.h"

// test_cpp_flow.py uses the same patterns.
const std::vector<std::string> kDistillLayers = {"stem", "branch.*", "add", "pool", "cat", "fc"};

// A float TinyResNet with model's weights and BN statistics, quantizers off, no gradients.
torchqat_test::TinyResNet float_teacher(torchqat_test::TinyResNet& model) {
  torchqat_test::TinyResNet teacher;
  torch::NoGradGuard no_grad;
  auto params = teacher->named_parameters();
  for (const auto& p : model->named_parameters()) params[p.key()].copy_(p.value());
  auto buffers = teacher->named_buffers();
  for (const auto& b : model->named_buffers()) {
    if (buffers.contains(b.key())) buffers[b.key()].copy_(b.value());
  }
  torchqat::set_mode(*teacher, torchqat::Mode::kDisabled);
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  teacher->eval();
  return teacher;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUT_DIR\n";
    return 2;
  }
  const std::string out = argv[1];
  try {
    torch::manual_seed(0);
    torchqat_test::TinyResNet model;
    torchqat_test::randomize_batch_norms(*model);
    torch::save(model, out + "/model.pt");
    c10::Dict<std::string, at::Tensor> result;
    std::vector<at::Tensor> batches;
    for (int i = 0; i < 5; ++i) {
      // A long tail, so the methods disagree: mostly N(0, 1), a few large values.
      auto x = torch::randn({6, 3, 8, 8});
      x.index_put_({0, 0, 0, i}, 6.0 + i);
      batches.push_back(x);
      result.insert("batch" + std::to_string(i), x);
    }
    for (const std::string method : {"max", "entropy", "percentile", "mse", "auto"}) {
      torchqat::calibrate(model, batches,
                          torchqat::CalibrateOptions().method(method).num_batches(4).percentile(99.9).progress(false));
      for (const auto& e : torchqat::quantizers(*model)) result.insert(method + "/" + e.name, e.quantizer->amax().clone());  // the buffer is reused
    }
    torchqat::calibrate(model, batches,
                        torchqat::CalibrateOptions().method("mse").num_batches(4).percentile(99.9).progress(false));
    {
      model->eval();  // running statistics, left as they are for fold_bn
      auto teacher = float_teacher(model);
      for (const std::string reduction : {"sum", "mean"}) {
        torchqat::tools::FeatureDistillationLoss distill(model, teacher, kDistillLayers, reduction);
        result.insert("distill/" + reduction, distill(batches[0]).detach());
      }
      model->train();
    }
    torchqat::fold_bn(*model);
    for (const auto& p : model->named_parameters()) result.insert("folded/" + p.key(), p.value().detach().clone());
    for (const auto& e : torchqat::quantizers(*model)) result.insert("folded/" + e.name + "._amax", e.quantizer->amax());
    {
      torchqat_test::YoloBlock block;
      const auto report = torchqat::share_scales(block, {torch::randn({1, 3, 16, 16})});
      std::ofstream groups(out + "/share_scales.txt");
      for (const auto& g : report.groups) {
        groups << g.major << "|";
        for (size_t i = 0; i < g.members.size(); ++i) groups << (i ? "," : "") << g.members[i];
        groups << "|";
        for (size_t i = 0; i < g.rules.size(); ++i) groups << (i ? "+" : "") << g.rules[i];
        groups << "\n";
      }
    }
    const auto bytes = torch::pickle_save(result);
    std::ofstream(out + "/flow.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  } catch (const std::exception& e) {
    std::cerr << "torchqat_flow_tool: " << e.what() << "\n";
    return 1;
  }
  std::cout << "wrote " << out << "/model.pt, flow.pt, share_scales.txt\n";
  return 0;
}
