// torchqat from C++, end to end on Fashion-MNIST: float training -> replace_with_quant_modules ->
// fold_bn -> calibrate (max, or a histogram method for activations) -> QAT fine-tuning -> accuracy ->
// checkpoint -> QDQ ONNX for TensorRT. See README.md and docs/guide/cpp.md.
#include <torch/torch.h>
#include <torchqat/torchqat.h>
#include <zlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace tqnn = torchqat::nn;

namespace {

constexpr int kSkip = 77;  // ctest's SKIP_RETURN_CODE: the dataset is not installed

struct Args {
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string out = "fashion_qat_out";
  int64_t epochs = 2;      // float training
  int64_t qat_epochs = 1;  // quantization-aware fine-tuning
  int64_t max_train_batches = -1;  // per epoch; -1: all
  int64_t max_test_batches = -1;
  int64_t batch_size = 64;
  int64_t calib_batches = 16;
  std::string calib = "max";  // max | entropy | percentile | mse
  double lr = 0.05;
};

void usage(const char* prog) {
  std::cout << "usage: " << prog << " [options]\n"
            << "  --data-dir DIR          Fashion-MNIST IDX .gz files (default /usr/share/datasets/fashion-mnist)\n"
            << "  --out DIR               where fashion_qat.pt and fashion_qat.onnx go (default fashion_qat_out)\n"
            << "  --epochs N              float training epochs (default 2)\n"
            << "  --qat-epochs N          QAT fine-tuning epochs (default 1)\n"
            << "  --max-train-batches N   stop each epoch after N batches (default: all)\n"
            << "  --max-test-batches N    evaluate on N batches only (default: all)\n"
            << "  --batch-size N          (default 64)\n"
            << "  --calib-batches N       calibration batches (default 16)\n"
            << "  --calib METHOD          max | entropy | percentile | mse (activations; weights use max)\n"
            << "  --lr LR                 float training learning rate; QAT uses LR / 10 (default 0.05)\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      usage(argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value (see --help)");
    const std::string v = argv[++i];
    if (flag == "--data-dir") a.data_dir = v;
    else if (flag == "--out") a.out = v;
    else if (flag == "--epochs") a.epochs = std::stoll(v);
    else if (flag == "--qat-epochs") a.qat_epochs = std::stoll(v);
    else if (flag == "--max-train-batches") a.max_train_batches = std::stoll(v);
    else if (flag == "--max-test-batches") a.max_test_batches = std::stoll(v);
    else if (flag == "--batch-size") a.batch_size = std::stoll(v);
    else if (flag == "--calib-batches") a.calib_batches = std::stoll(v);
    else if (flag == "--calib") a.calib = v;
    else if (flag == "--lr") a.lr = std::stod(v);
    else throw std::invalid_argument("unknown flag " + flag + " (see --help)");
  }
  if (a.calib != "max" && a.calib != "entropy" && a.calib != "percentile" && a.calib != "mse") {
    throw std::invalid_argument("--calib must be max, entropy, percentile or mse, got " + a.calib);
  }
  if (a.batch_size <= 0 || a.epochs < 0 || a.qat_epochs < 0 || a.calib_batches <= 0) {
    throw std::invalid_argument("--batch-size and --calib-batches must be > 0, epochs >= 0");
  }
  return a;
}

// ----- data: the IDX format, gzip-compressed ---------------------------------------------------

std::vector<uint8_t> read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) data.insert(data.end(), buf, buf + n);
  const bool failed = n < 0;
  gzclose(f);
  if (failed) throw std::runtime_error("cannot decompress " + path);
  return data;
}

uint32_t big_endian(const std::vector<uint8_t>& d, size_t at) {
  return (uint32_t{d[at]} << 24) | (uint32_t{d[at + 1]} << 16) | (uint32_t{d[at + 2]} << 8) | d[at + 3];
}

// An IDX file of unsigned bytes (magic 0x00 0x00 0x08 ndim) as a uint8 tensor of its dims.
at::Tensor read_idx_u8(const std::string& path) {
  const auto d = read_gz(path);
  if (d.size() < 4 || d[0] != 0 || d[1] != 0 || d[2] != 0x08) throw std::runtime_error(path + " is not a uint8 IDX file");
  const size_t ndim = d[3];
  std::vector<int64_t> dims;
  size_t numel = 1;
  for (size_t i = 0; i < ndim; ++i) {
    dims.push_back(big_endian(d, 4 + 4 * i));
    numel *= static_cast<size_t>(dims.back());
  }
  const size_t offset = 4 + 4 * ndim;
  if (d.size() != offset + numel) throw std::runtime_error(path + ": size does not match its header");
  return torch::from_blob(const_cast<uint8_t*>(d.data()) + offset, dims, torch::kUInt8).clone();
}

struct Split {
  at::Tensor images;  // [N, 1, 28, 28] float, normalized
  at::Tensor labels;  // [N] int64
};

Split load_split(const std::string& dir, const std::string& split) {
  constexpr double kMean = 0.2860, kStd = 0.3530;  // of the training images in [0, 1]
  const auto images = read_idx_u8(dir + "/" + split + "-images-idx3-ubyte.gz");
  const auto labels = read_idx_u8(dir + "/" + split + "-labels-idx1-ubyte.gz");
  return {images.to(torch::kFloat).div_(255).sub_(kMean).div_(kStd).unsqueeze(1), labels.to(torch::kLong)};
}

// ----- model ---------------------------------------------------------------------------------

// conv-BN-ReLU-conv-BN plus the input, then ReLU. The sum is a QuantAdd from the start: C++ has
// no float add module to replace, and its quantizer stays disabled during float training.
struct ResidualImpl : torch::nn::Module {
  explicit ResidualImpl(int64_t c) {
    using namespace torch::nn;
    body = register_module("body", Sequential(Conv2d(Conv2dOptions(c, c, 3).padding(1).bias(false)), BatchNorm2d(c),
                                              ReLU(), Conv2d(Conv2dOptions(c, c, 3).padding(1).bias(false)),
                                              BatchNorm2d(c)));
    add = register_module("add", tqnn::QuantAdd());
    relu = register_module("relu", ReLU());
  }
  at::Tensor forward(const at::Tensor& x) { return relu(add(body->forward(x), x)); }

  torch::nn::Sequential body{nullptr};
  tqnn::QuantAdd add{nullptr};
  torch::nn::ReLU relu{nullptr};
};
TORCH_MODULE(Residual);

// A float CNN of torch::nn layers in a Sequential, so replace_with_quant_modules reaches them.
torch::nn::Sequential make_model() {
  using namespace torch::nn;
  return Sequential(Conv2d(Conv2dOptions(1, 16, 3).padding(1).bias(false)), BatchNorm2d(16), ReLU(),
                    MaxPool2d(2),  // 14x14
                    Residual(16),
                    Conv2d(Conv2dOptions(16, 32, 3).stride(2).padding(1).bias(false)), BatchNorm2d(32), ReLU(),  // 7x7
                    Residual(32), AdaptiveAvgPool2d(1), Flatten(), Linear(32, 10));
}

// ----- training and evaluation ---------------------------------------------------------------

void train_epoch(torch::nn::Sequential& model, const Split& data, torch::optim::Optimizer& opt, const Args& args,
                 const std::string& label) {
  model->train();
  const int64_t n = data.images.size(0);
  const auto order = torch::randperm(n);
  double loss_sum = 0;
  int64_t batches = 0;
  for (int64_t start = 0; start < n; start += args.batch_size) {
    if (args.max_train_batches >= 0 && batches >= args.max_train_batches) break;
    const auto idx = order.slice(0, start, std::min(start + args.batch_size, n));
    const auto loss = torch::nn::functional::cross_entropy(model->forward(data.images.index_select(0, idx)),
                                                           data.labels.index_select(0, idx));
    opt.zero_grad();
    loss.backward();
    opt.step();
    loss_sum += loss.item<double>();
    ++batches;
  }
  std::cout << "  " << label << ": " << batches << " batches, mean loss " << std::fixed << std::setprecision(4)
            << loss_sum / std::max<int64_t>(batches, 1) << "\n";
}

double accuracy(torch::nn::Sequential& model, const Split& data, const Args& args) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t n = data.images.size(0);
  int64_t correct = 0, seen = 0, batches = 0;
  for (int64_t start = 0; start < n; start += 256) {
    if (args.max_test_batches >= 0 && batches++ >= args.max_test_batches) break;
    const auto x = data.images.slice(0, start, std::min(start + 256, n));
    const auto y = data.labels.slice(0, start, std::min(start + 256, n));
    correct += model->forward(x).argmax(1).eq(y).sum().item<int64_t>();
    seen += y.size(0);
  }
  return seen ? 100.0 * static_cast<double>(correct) / static_cast<double>(seen) : 0.0;
}

// The first n training batches, what calibration runs through the model.
std::vector<at::Tensor> calibration_batches(const Split& data, const Args& args) {
  std::vector<at::Tensor> batches;
  const int64_t n = data.images.size(0);
  for (int64_t b = 0; b < args.calib_batches && b * args.batch_size < n; ++b) {
    batches.push_back(data.images.slice(0, b * args.batch_size, std::min((b + 1) * args.batch_size, n)));
  }
  return batches;
}

int run(const Args& args) {
  const std::string train_images = args.data_dir + "/train-images-idx3-ubyte.gz";
  if (!fs::exists(train_images)) {
    std::cerr << "Fashion-MNIST not found in " << args.data_dir
              << " (apt-get install dataset-fashion-mnist, or pass --data-dir); skipping\n";
    return kSkip;
  }
  torch::manual_seed(0);
  const auto t0 = std::chrono::steady_clock::now();
  const Split train = load_split(args.data_dir, "train");
  const Split test = load_split(args.data_dir, "t10k");
  std::cout << "Fashion-MNIST: " << train.images.size(0) << " training, " << test.images.size(0) << " test images\n";

  auto model = make_model();
  // Float training: the residual adds' quantizers (already quantized modules) stay off.
  torchqat::set_mode(*model, torchqat::Mode::kDisabled);
  {
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(args.lr).momentum(0.9).weight_decay(1e-4));
    for (int64_t e = 0; e < args.epochs; ++e) train_epoch(model, train, opt, args, "float epoch " + std::to_string(e + 1));
  }
  const double float_acc = accuracy(model, test, args);

  const auto replaced = tqnn::replace_with_quant_modules(model);
  // BN folded into the convs, as TensorRT will run them (and as NVIDIA's QAT recipes train).
  const auto folded = torchqat::fold_bn(*model);
  std::cout << "replaced " << replaced.size() << " layers with quantized ones, folded " << folded.size()
            << " batch norms\n";
  torchqat::set_mode(*model, torchqat::Mode::kQuant);
  // Weights per channel with max; activations with args.calib (a histogram unless max).
  torchqat::calibrate(model, calibration_batches(train, args),
                      torchqat::CalibrateOptions().method(args.calib).num_batches(args.calib_batches));
  const double ptq_acc = accuracy(model, test, args);

  {
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(args.lr / 10).momentum(0.9));
    for (int64_t e = 0; e < args.qat_epochs; ++e) train_epoch(model, train, opt, args, "QAT epoch " + std::to_string(e + 1));
  }
  const double qat_acc = accuracy(model, test, args);

  fs::create_directories(args.out);
  const std::string checkpoint = (fs::path(args.out) / "fashion_qat.pt").string();
  const std::string onnx_path = (fs::path(args.out) / "fashion_qat.onnx").string();
  torch::save(model, checkpoint);
  // Deployment side: a fresh model of the same layout, never calibrated, takes weights and every
  // amax from the checkpoint (torch::load would need each quantizer's amax to exist already).
  auto reloaded = make_model();
  tqnn::replace_with_quant_modules(reloaded);
  torchqat::fold_bn(*reloaded);  // the same layout: convs with bias, no BN
  torchqat::load_checkpoint(*reloaded, checkpoint);
  const double reloaded_acc = accuracy(reloaded, test, args);
  TORCH_CHECK(reloaded_acc == qat_acc, "the reloaded checkpoint scores ", reloaded_acc, "%, the model it came from ",
              qat_acc, "%");
  torchqat::onnx::export_model(
      model, {test.images.slice(0, 0, 1)}, onnx_path,
      torchqat::onnx::ExportOptions().dynamic_batch(true).input_names({"images"}).output_names({"logits"}));

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << std::fixed << std::setprecision(2) << "test accuracy: float " << float_acc << "%, PTQ (" << args.calib
            << ") " << ptq_acc << "%, QAT " << qat_acc << "% (the same after reloading the checkpoint)\n"
            << "wrote " << checkpoint << " and " << onnx_path << " (" << std::setprecision(1) << seconds << " s)\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const c10::Error& e) {
    std::cerr << "fashion_qat: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "fashion_qat: " << e.what() << "\n";
  }
  return 1;
}
