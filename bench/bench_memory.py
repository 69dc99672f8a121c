"""Memory: no growth over 1,000 training iterations, and the largest B a device holds.

* ``test_memory_steady`` (slow) -- 1,000 ``Trainer.iterate()`` calls (rollout + GAE + update);
  the memory held after iteration 100 and after iteration 1,000 must agree within
  ``GROWTH_TOLERANCE``. Held memory is ``torch.cuda.memory_allocated`` on CUDA; on the CPU,
  which has no allocator statistics, it is the bytes of every tensor storage reachable from
  Python (``gc``), an exact leak detector for tensors kept by Python objects (the resident set
  is reported beside it, not asserted: the C allocator does not return every freed page).
* ``test_memory_model`` -- ``MemoryModel`` of a training run: bytes per env row (state, the
  observation, ``T`` rollout slots, the step's transient per row) and per cached image
  (SAM2 features, the env's per-image constants), plus the fixed part (weights, optimizer).
  ``max_batch`` solves for the largest B under a memory budget; ``scripts/bench.py`` reports it
  for the GPU's memory and several cache sizes. The transient part is fitted from the peaks of
  one iteration at two batch sizes (CUDA: allocator peak; CPU: ``flops.Traffic`` estimate).

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/bench_memory.py -p no:cacheprovider --benchmark-only -m slow
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import asdict, dataclass

import pytest
import torch

from bench.bench_train import make_trainer
from bench.measure import PeakMemory, rss_mib, sync
from bench.flops import count_traffic, feature_bytes_per_image

GROWTH_TOLERANCE_BYTES = 1 << 20  # 1 MiB: far below one leaked rollout (B x T observations)
ITERATIONS, CHECKPOINT = 1000, 100


# ---------------------------------------------------------------------------------- held memory
def live_tensor_bytes() -> int:
    """Bytes of the distinct tensor storages reachable from Python objects (CPU leak check)."""
    gc.collect()
    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance() on lazy deprecated module proxies warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                storage = obj.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def held_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        sync(device)
        return torch.cuda.memory_allocated(device)
    return live_tensor_bytes()


@pytest.mark.slow
def test_memory_steady(benchmark, memory_segmenter, assets, opts, recorder, tmp_path):
    # Small on the CPU (~0.1-0.25 s per iteration on 2 shared cores); on a GPU, SAM2 at B = 256
    # keeps 1,000 iterations near a minute. One pass of two minibatches per update.
    if opts.device.type == "cuda":
        num_envs, num_steps = (256, 2) if memory_segmenter == "sam2" else (1024, 4)
    else:
        num_envs, num_steps = 4, 2
    trainer, _ = make_trainer(assets, opts, memory_segmenter, num_envs, str(tmp_path),
                              num_steps=num_steps, update_epochs=1, num_minibatches=2)
    held: dict[int, int] = {}
    rss: dict[int, float] = {}

    def run() -> None:
        for i in range(1, ITERATIONS + 1):
            trainer.iterate()
            if i in (CHECKPOINT, ITERATIONS):
                held[i], rss[i] = held_bytes(opts.device), rss_mib()

    with PeakMemory(opts.device) as mem:
        benchmark.pedantic(run, rounds=1, warmup_rounds=0, iterations=1)
    growth = held[ITERATIONS] - held[CHECKPOINT]
    entry = {"kind": "memory_steady", "segmenter": memory_segmenter, "num_envs": num_envs,
             "num_steps": trainer.cfg.ppo.num_steps, "iterations": ITERATIONS,
             "held_bytes_at_100": held[CHECKPOINT], "held_bytes_at_1000": held[ITERATIONS],
             "growth_bytes": growth, "rss_mib_at_100": rss[CHECKPOINT],
             "rss_mib_at_1000": rss[ITERATIONS],
             "held_kind": "cuda_memory_allocated" if opts.device.type == "cuda" else "python_reachable_tensors",
             "steps_per_s": ITERATIONS * num_envs * trainer.cfg.ppo.num_steps / benchmark.stats.stats.mean,
             **mem.result}
    recorder.memory.append(entry)
    benchmark.group = "memory"
    benchmark.extra_info.update(**entry, **opts.info())
    assert growth <= GROWTH_TOLERANCE_BYTES, (
        f"held memory grew by {growth / 2**20:.2f} MiB between iteration {CHECKPOINT} and "
        f"{ITERATIONS} (allowed {GROWTH_TOLERANCE_BYTES / 2**20:.0f} MiB): something keeps "
        "per-iteration tensors alive")


# ---------------------------------------------------------------------------------- the model
def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if hasattr(obj, "values") and hasattr(obj, "batch_size"):  # a TensorDict
        return sum(_tensor_bytes(t) for t in obj.values(include_nested=True, leaves_only=True))
    return 0


def per_image_bytes(env) -> int:
    """Device bytes per dataset image: every env constant with a leading ``[N]`` axis (GT and
    its boundary terms, observation RGB, the precomputed first decode) and the segmenter's
    per-image tensors (SAM2 features; the geodesic step costs)."""
    n = env.num_images
    total = feature_bytes_per_image(env.segmenter) * n
    for owner in (env, env.segmenter):
        for name, value in vars(owner).items():
            if name == "features":
                continue
            for t in value if isinstance(value, (tuple, list)) else (value,):  # e.g. gt_terms
                if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == n:
                    total += _tensor_bytes(t)
    return total // n


@dataclass
class MemoryModel:
    """Device memory of a training run as ``fixed + rows * B + images * N`` (bytes)."""

    segmenter: str
    num_steps: int
    state_per_row: int
    obs_per_row: int
    rollout_per_row: int
    """``T`` slots of observation + actor outputs + GAE fields."""
    transient_per_row: float
    """Peak extra bytes per row while stepping (intermediates of decode, metrics, observation)."""
    transient_fixed: float
    """Peak extra bytes independent of B (e.g. the decoder works in chunks of rows)."""
    transient_kind: str
    per_image: int
    fixed: int
    """Model weights, policy, optimizer state."""

    @property
    def per_row(self) -> float:
        return self.state_per_row + 2 * self.obs_per_row + self.rollout_per_row + self.transient_per_row

    def bytes_for(self, batch: int, images: int) -> float:
        return self.fixed + self.transient_fixed + self.per_image * images + self.per_row * batch

    def max_batch(self, budget_bytes: float, images: int, headroom: float = 0.9) -> int:
        """Largest B with ``bytes_for(B, images) <= headroom * budget`` (0 if the cache alone
        does not fit)."""
        free = headroom * budget_bytes - self.fixed - self.transient_fixed - self.per_image * images
        return max(0, int(free // self.per_row))

    def to_dict(self) -> dict:
        return {**asdict(self), "per_row": self.per_row}


def _iteration_peak(trainer) -> float:
    """Peak extra bytes of one ``Trainer.iterate()`` (rollout, GAE, update): the CUDA
    allocator's peak, or ``flops.Traffic``'s live-bytes estimate on the CPU."""
    device = trainer.device
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        trainer.iterate()
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    return float(count_traffic(trainer.iterate).peak_live)


def memory_model(small, large, segmenter: str) -> MemoryModel:
    """Fit the model on two built Trainers that differ only in ``num_envs``: persistent bytes
    per row from the larger one's tensors, the transient as a line through both iterations'
    peaks (the SAM2 decoder works in fixed-size chunks, so part of it does not grow with B)."""
    env, rows = large.env, large.local_envs
    peaks = [_iteration_peak(t) for t in (small, large)]
    slope = max(0.0, (peaks[1] - peaks[0]) / (large.local_envs - small.local_envs))
    fixed = 4 * sum(_tensor_bytes(p) for p in large.policy.parameters())  # weights, grads, Adam x2
    model = getattr(env.segmenter, "model", None)
    if model is not None:
        fixed += sum(_tensor_bytes(p) for p in model.parameters())
    return MemoryModel(
        segmenter=segmenter, num_steps=large.cfg.ppo.num_steps,
        state_per_row=_tensor_bytes(large.state) // rows,
        obs_per_row=_tensor_bytes(env.observe(large.state)) // rows,
        rollout_per_row=_tensor_bytes(large.buffer) // rows,
        transient_per_row=slope, transient_fixed=max(0.0, peaks[0] - slope * small.local_envs),
        transient_kind="cuda_max_allocated" if env.device.type == "cuda" else "dispatch_live_bytes",
        per_image=per_image_bytes(env), fixed=fixed,
    )


def test_memory_model(benchmark, segmenter_name, assets, opts, recorder, tmp_path):
    sizes = (256, 1024) if opts.device.type == "cuda" else (2, 6)
    small, large = (make_trainer(assets, opts, segmenter_name, b, str(tmp_path / str(b)))[0]
                    for b in sizes)
    for trainer in (small, large):
        trainer.iterate()  # buffers reach their steady keys (advantage, value_target)
    model = benchmark.pedantic(memory_model, args=(small, large, segmenter_name), rounds=1,
                               iterations=1)
    # The persistent per-row part must account for a trainer's real state and rollout.
    real = _tensor_bytes(large.state) + _tensor_bytes(large.buffer)
    predicted = (model.state_per_row + model.rollout_per_row) * large.local_envs
    assert abs(predicted - real) <= 0.01 * real, (predicted, real)
    assert model.per_image > 0 and model.per_row > model.state_per_row
    entry = {"kind": "memory_model", **model.to_dict(), "probe_num_envs": list(sizes),
             "num_images": large.env.num_images}
    if opts.device.type == "cuda":
        total = torch.cuda.get_device_properties(opts.device).total_memory
        entry["device_memory_bytes"] = total
        entry["max_batch_device"] = {str(n): model.max_batch(total, n) for n in (8, 1000, 10_000)}
    recorder.memory.append({k: v for k, v in entry.items() if not isinstance(v, (dict, list))})
    benchmark.group = "memory"
    benchmark.extra_info.update(**entry, **opts.info())
