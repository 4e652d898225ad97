import atexit
import os
import shutil
import tempfile

# torch.compile's caches go to a folder of this run, removed at exit: a cache left by an earlier,
# interrupted or concurrent run (a truncated .so: "file too short") must not fail these tests.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="torchqat-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import pytest
import torch

import torchqat  # noqa: F401  (registers torch.ops.torchqat)

# A GPU alone is not enough: a build without the CUDA kernels would fail instead of skipping.
cuda = pytest.mark.skipif(not (torch.cuda.is_available() and torchqat.cuda_compiled()),
                          reason="needs a CUDA GPU and a build with the CUDA kernels")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
