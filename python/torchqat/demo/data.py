"""Fashion-MNIST from its IDX files (gzip or plain), read with numpy: no torchvision."""
import gzip
import os

import numpy as np
import torch

__all__ = ["DEFAULT_DATA_DIR", "CLASSES", "read_idx", "load_split", "batches"]

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # of the training images, scaled to [0, 1]

# IDX type codes -> numpy dtypes (big-endian, as the format stores them)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """The array stored in one IDX file (.gz read transparently)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes of data), file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims)


def _find(data_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {data_dir}. Install Debian's dataset-fashion-mnist package "
        "(apt-get install dataset-fashion-mnist) or pass --data-dir pointing at the IDX files.")


def load_split(split, data_dir=DEFAULT_DATA_DIR, limit=None):
    """(images float32 [N,1,28,28] normalised, labels int64 [N]) of split 'train' or 't10k'.

    limit keeps the first `limit` examples (the --quick subset).
    """
    if split not in ("train", "t10k"):
        raise ValueError(f"split must be 'train' or 't10k', got {split!r}")
    images = read_idx(_find(data_dir, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find(data_dir, f"{split}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"unexpected Fashion-MNIST shapes: images {images.shape}, labels {labels.shape}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32)).div_(255.0).sub_(MEAN).div_(STD).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def batches(x, y, batch_size, shuffle=False, generator=None, augment=False, limit=None):
    """Yields (images, labels) batches of a tensor dataset held in memory.

    augment: random horizontal flips and random shifts of up to 2 pixels (the usual light
    Fashion-MNIST augmentation). limit: stop after that many batches.
    """
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    count = 0
    for start in range(0, n, batch_size):
        if limit is not None and count >= limit:
            return
        idx = order[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        if augment:
            xb = _augment(xb, generator)
        count += 1
        yield xb, yb


def _augment(xb, generator):
    flip = torch.rand(xb.shape[0], generator=generator) < 0.5
    xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
    pad = 2
    padded = torch.nn.functional.pad(xb, (pad, pad, pad, pad), value=-MEAN / STD)  # pad with black
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()  # one shift per batch: cheap
    return padded[:, :, dy:dy + 28, dx:dx + 28].contiguous()
