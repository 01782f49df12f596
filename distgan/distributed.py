"""Rank, world size, gathers and broadcasts over the process group Ray Train sets up,
falling back to one process when there is none (local runs, tests). Tensors travel on the
group's device (CUDA for nccl): features gathered for an evaluation never visit the host."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _group_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows in rank order (row counts may differ by rank); every rank gets the
    whole tensor, on the device it gave."""
    if not is_distributed():
        return t
    device = _group_device()
    local = t.to(device).contiguous()
    n = torch.tensor([len(local)], device=device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)]).to(t.device)


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a small tensor (e.g. D's mean outputs), on the device it was given."""
    if not is_distributed():
        return t
    out = t.detach().to(_group_device()).clone()
    dist.all_reduce(out)
    return (out / dist.get_world_size()).to(t.device)


def all_gather_object(obj: object) -> list:
    """Every rank's small picklable object, in rank order (e.g. the node each rank runs on)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object) -> object:
    """Rank 0's small picklable object on every rank (the metrics it alone computed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Make every rank hold rank 0's buffers (e.g. G_ema's BatchNorm running statistics,
    which each rank updates from its own batch) so all ranks generate alike."""
    if not is_distributed():
        return
    device = _group_device()
    for b in module.buffers():
        t = b.data.to(device)
        dist.broadcast(t, src=0)
        b.data.copy_(t)
