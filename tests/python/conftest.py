import pytest
import torch

import torchqat  # noqa: F401  (registers torch.ops.torchqat)

# A GPU alone is not enough: a build without the CUDA kernels would fail instead of skipping.
cuda = pytest.mark.skipif(not (torch.cuda.is_available() and torchqat.cuda_compiled()),
                          reason="needs a CUDA GPU and a build with the CUDA kernels")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
