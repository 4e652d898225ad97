// torchqat_export_tool OUT_DIR [w4]: builds the test model (onnx_test_model.h) with fixed seeds
// (with w4: 4-bit per-channel weight quantizers, exported as INT4 at opset 21), max-calibrates it
// on random data and writes
//   OUT_DIR/model.pt    torch::save of the module (a TorchScript archive; torch.jit.load reads it)
//   OUT_DIR/model.onnx  export_model, dynamic batch, input "images", output "logits"
//   OUT_DIR/io.pt       (input, output) of the C++ fake-quant model, torch.load-able
// for tests/python/test_onnx_cpp_export.py, which compares ONNX Runtime with torchqat's Python
// modules carrying the same weights.
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "onnx_test_model.h"
#include "torchqat/onnx/export.h"

int main(int argc, char** argv) {
  const bool w4 = argc == 3 && std::string(argv[2]) == "w4";
  if (argc != 2 && !w4) {
    std::cerr << "usage: " << argv[0] << " OUT_DIR [w4]\n";
    return 2;
  }
  const std::string out = argv[1];
  try {
    torch::manual_seed(0);
    torchqat_test::TinyResNet model(
        w4 ? std::optional<torchqat::QuantDescriptor>(torchqat::QuantDescriptor().num_bits(4).axis(std::vector<int64_t>{0}))
           : std::nullopt);
    torchqat_test::randomize_batch_norms(*model);
    model->eval();
    std::vector<at::Tensor> batches;
    for (int i = 0; i < 4; ++i) batches.push_back(torch::randn({8, 3, 8, 8}));
    torchqat_test::calibrate(model, batches);

    torch::save(model, out + "/model.pt");
    torchqat::onnx::export_model(
        model, {torch::randn({2, 3, 8, 8})}, out + "/model.onnx",
        torchqat::onnx::ExportOptions().dynamic_batch(true).input_names({"images"}).output_names({"logits"}));

    const at::Tensor x = torch::randn({5, 3, 8, 8});
    at::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = model->forward(x);
    }
    const auto bytes = torch::pickle_save(c10::ivalue::Tuple::create({x, y}));
    std::ofstream(out + "/io.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  } catch (const std::exception& e) {
    std::cerr << "torchqat_export_tool: " << e.what() << "\n";
    return 1;
  }
  std::cout << "wrote " << out << "/model.pt, model.onnx, io.pt\n";
  return 0;
}
