#include <torch/torch.h>
#include <torchqat/torchqat.h>

#include <iostream>

int main() {
  torchqat::TensorQuantizer q(torchqat::QuantDescriptor().amax(std::vector<float>{1.0f}));
  auto x = torch::linspace(-2, 2, 9);
  auto y = q(x);
  auto ref = at::fake_quantize_per_tensor_affine(x, 1.0f / 127.0f, 0, -128, 127);
  std::cout << "torchqat " << torchqat::version() << " consumer: " << y << std::endl;
  return torch::equal(y, ref) ? 0 : 1;
}
