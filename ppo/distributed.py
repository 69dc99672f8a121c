"""torch.distributed plumbing: one process per GPU (or CPU process under gloo), each with its
own env batch and seed stream, gradients averaged with one flat all-reduce per minibatch.

Launched by ``torchrun`` (which sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``);
without those variables everything here is a no-op for a single process. A flat all-reduce is
used instead of DDP because TorchRL's loss runs the actor and critic as separate module calls
on one trunk, which DDP's reducer does not expect, and a flat buffer is one collective anyway.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def context() -> DistContext:
    """The process group of this run, initialising it from torchrun's environment if needed
    (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get("SAM2RL_DIST_TIMEOUT", "600")))
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each rank on its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if device.type == "cuda" and ctx.enabled:
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return device


def rank_seed(seed: int, ctx: DistContext) -> int:
    """Seed of a rank's env rows and sampler: distinct per rank, equal to ``seed`` on rank 0
    (so a 1-process run is the same as rank 0's stream)."""
    return int(seed) + 1_000_003 * ctx.rank


def broadcast_parameters(ctx: DistContext, module: torch.nn.Module) -> None:
    """Start every rank from rank 0's weights."""
    if ctx.enabled:
        for p in module.parameters():
            dist.broadcast(p.data, src=0)


def grad_allreduce_hook(ctx: DistContext, module: torch.nn.Module) -> Callable[[], None] | None:
    """A function to call after ``backward``: averages all gradients over ranks in one flat
    all-reduce (so every rank applies the same update and parameters stay identical)."""
    if not ctx.enabled:
        return None
    params = [p for p in module.parameters() if p.requires_grad]

    def hook() -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= ctx.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset: offset + n].view_as(p)
            offset += n

    return hook


def any_across_ranks(ctx: DistContext, flags: torch.Tensor) -> torch.Tensor:
    """Element-wise OR of a bool tensor over ranks (so every rank stops together)."""
    if not ctx.enabled:
        return flags
    x = flags.to(torch.int32)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x.bool()


def mean_across_ranks(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Average host scalars over ranks (for logging)."""
    if not ctx.enabled:
        return values
    keys = sorted(values)
    device = torch.device("cuda", ctx.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= ctx.world_size
    return dict(zip(keys, t.tolist()))


def abort_all(ctx: DistContext, message: str) -> None:
    """Called on a failing rank: tear the group down so the others fail fast instead of
    hanging in their next collective (torchrun then stops every rank)."""
    if ctx.enabled and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # the group may already be broken; the original error matters
            pass


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
