"""Data-parallel training on ``torch.distributed`` (launched with ``torchrun``).

Each process (rank) runs its own ``chains`` Langevin chains from its own random streams, on its
own draw of observed windows; after the gradients of both networks are computed they are averaged
over ranks (one flat all-reduce per iteration), so every rank applies the same Adam update and
the ranks stay identical. This is what DistributedDataParallel does, written out: DDP's reducer
hooks parameter gradients of a module's forward/backward, but an iteration here also runs the
descriptor forward and backward 2 l times for *input* gradients only (Langevin), which must not
trigger gradient synchronisation.

BatchNorm in the generator normalises over each rank's own ``chains`` clips (no SyncBatchNorm:
it is GPU-only and the statistics of a rank's batch are exactly those the single-process run with
the same chains per process uses). Training with N ranks of m chains therefore equals one process
that accumulates the gradients of N groups of m chains (``tests/test_distributed.py``).

Rank 0 alone writes the run folder (config, metrics, checkpoints, previews); a checkpoint holds
every rank's random streams, so ``--resume`` continues each rank's chains exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

RANK_SEED_STRIDE = 7919  # rank r draws from streams seeded seed + r * RANK_SEED_STRIDE


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    """The process group this process belongs to (a single process when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def init_from_env(device: str) -> Dist:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1): NCCL for
    CUDA, gloo otherwise. A no-op for a plain single-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    use_cuda = device in ("cuda", "auto") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients(model: nn.Module, stats: torch.Tensor) -> torch.Tensor:
    """All-reduce (mean) every parameter gradient and the stats in one flat buffer."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [stats.reshape(-1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g)
        offset += n
    return flat[offset:].to(stats.dtype)


def gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
