import pytest
import torch

import torchqat  # noqa: F401  (registers torch.ops.torchqat)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
