"""torch.distributed plumbing: one process per GPU (or CPU process under gloo), each with its
own env batch and seed stream, gradients averaged with one flat all-reduce per minibatch.

Launched by ``torchrun`` (which sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``);
without those variables everything here is a no-op for a single process. A flat all-reduce is
used instead of DDP because TorchRL's loss runs the actor and critic as separate module calls
on one trunk, which DDP's reducer does not expect, and a flat buffer is one collective anyway.

Failures: a rank that fails calls ``abort_all``, which writes its message into the rendezvous
store and tears its process group down. Under gloo the other ranks' next collective then
raises at once ("connection closed by peer"), and ``peer_failure`` lets them name the rank and
message that caused it. NCCL does not notice a vanished peer: there ``torchrun`` stops the
remaining workers when one exits non-zero, and failing that NCCL's watchdog aborts after
``SAM2RL_DIST_TIMEOUT`` seconds (default 600).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable

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


def context(device: torch.device | None = None) -> DistContext:
    """The process group of this run, initialising it from torchrun's environment if needed:
    NCCL when the run's ``device`` is CUDA, gloo on CPU (``None``: CUDA if available)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
        backend = "nccl" if cuda else "gloo"
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


def check_batch_split(num_envs: int, num_steps: int, num_minibatches: int, ctx: DistContext) -> int:
    """Rows of the env batch on this rank: ``num_envs`` is the global batch, split evenly.

    Raises naming the values when ``num_envs`` does not split over the ranks or a rank's
    ``num_steps x rows`` rollout does not split into ``num_minibatches``."""
    if num_envs % ctx.world_size:
        raise ValueError(
            f"num_envs={num_envs} is the global batch and must split evenly over the "
            f"{ctx.world_size} processes; choose a multiple of {ctx.world_size}."
        )
    rows = num_envs // ctx.world_size
    if (num_steps * rows) % num_minibatches:
        raise ValueError(
            f"each of the {ctx.world_size} processes collects num_steps x num_envs/world = "
            f"{num_steps} x {rows} = {num_steps * rows} transitions, not divisible by "
            f"num_minibatches={num_minibatches}; change num_envs, num_steps or num_minibatches."
        )
    return rows


def shard_indices(num_items: int, rank: int, world_size: int) -> list[int]:
    """Items ``rank::world_size`` of ``num_items`` (this rank's shard of a dataset)."""
    if num_items < world_size:
        raise ValueError(
            f"shard_data needs at least one training image per process: {num_items} images "
            f"for {world_size} processes; use more images or turn shard_data off."
        )
    return list(range(rank, num_items, world_size))


def broadcast_parameters(ctx: DistContext, module: torch.nn.Module) -> None:
    """Start every rank from rank 0's weights (parameters and buffers, e.g. BatchNorm's)."""
    if ctx.enabled:
        for p in [*module.parameters(), *module.buffers()]:
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


def gather_to_rank0(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (tensors moved to the CPU first), as a list on rank 0, None on
    the others and in a single process. A collective: every rank must call it."""
    if not ctx.enabled:
        return None
    out = [None] * ctx.world_size if ctx.rank == 0 else None
    dist.gather_object(_to_cpu(obj), out, dst=0)
    return out


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


_ABORT_KEY = "sam2rl/abort"


class PeerFailedError(RuntimeError):
    """Another rank failed (its message is in this one's); this rank stopped because of it."""


def _store():
    # The rendezvous store of the default group; torch has no public accessor for it.
    return dist.distributed_c10d._get_default_store()


def abort_all(ctx: DistContext, message: str) -> None:
    """Called on a failing rank: post ``message`` for the others (unless an earlier failure
    already did) and tear the group down, so their next collective fails at once instead of
    hanging (under gloo; see the module docstring for NCCL)."""
    if not (ctx.enabled and dist.is_initialized()):
        return
    try:
        store = _store()
        if not store.check([_ABORT_KEY]):
            store.set(_ABORT_KEY, f"rank {ctx.rank}: {message}")
    except Exception:  # the store may be gone with its host; the original error matters
        pass
    try:
        dist.destroy_process_group()
    except Exception:  # the group may already be broken
        pass


def peer_failure(ctx: DistContext) -> str | None:
    """The message another rank posted with ``abort_all`` (``"rank R: ..."``), if any and the
    store is still reachable; read after a collective failed to say why."""
    if not (ctx.enabled and dist.is_initialized()):
        return None
    try:
        store = _store()
        if store.check([_ABORT_KEY]):
            msg = store.get(_ABORT_KEY).decode()
            if not msg.startswith(f"rank {ctx.rank}:"):
                return msg
    except Exception:  # the store's host (rank 0 outside torchrun) may be gone
        pass
    return None


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
