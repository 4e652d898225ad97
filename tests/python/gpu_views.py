"""Places test inputs on a GPU as real views into larger allocations."""
import torch


def on_gpu(x, offset=0, device="cuda"):
    """x's values on `device`, with x's strides, `offset` elements into a fresh allocation: a view
    with a storage offset, so offset 1 starts off the 16-byte boundary (x.cuda() never does)."""
    assert x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    buf = torch.empty(x.numel() + offset, dtype=x.dtype, device=device)
    v = buf[offset:].as_strided(x.shape, x.stride())
    v.copy_(x)
    assert v.storage_offset() == offset
    assert (v.data_ptr() % 16 == 0) == (offset * x.element_size() % 16 == 0)
    return v
