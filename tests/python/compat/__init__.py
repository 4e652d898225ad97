"""pytorch-quantization 2.2.1 compatibility: each test pins a documented behaviour of a public name."""
