"""Rank, world size and gathers over the process group Ray Train sets up, falling back to
one process when there is none (local runs, tests)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_gather_rows(arr: np.ndarray) -> np.ndarray:
    """Concatenate every rank's rows in rank order (rows may differ by rank); every rank gets
    the whole array. Tensors go through the process group's own device (CUDA for nccl)."""
    if not is_distributed():
        return arr
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    n = torch.tensor([len(t)], device=device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=device)
    padded[:len(t)] = t
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)]).cpu().numpy()


def all_gather_object(obj: object) -> list:
    """Every rank's small picklable object, in rank order (e.g. the node each rank runs on)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Make every rank hold rank 0's buffers (e.g. G_ema's BatchNorm running statistics,
    which each rank updates from its own batch) so all ranks generate alike."""
    if not is_distributed():
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    for b in module.buffers():
        t = b.data.to(device)
        dist.broadcast(t, src=0)
        b.data.copy_(t)
