"""When and where calibrators merge their statistics across processes (torch.distributed)."""
import torch
import torch.distributed as dist


def active(group=None):
    """True when torch.distributed is initialised with more than one process in group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def device(group=None):
    """The device collectives of group take tensors on: CUDA for NCCL, else the CPU (gloo, mpi)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
