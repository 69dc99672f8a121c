"""Which cases the benchmark suite runs on a device: the batch sizes of each kind of case, the
ones kept out of the default CPU run (marked slow), and each env-step case's rounds."""

from __future__ import annotations

import pytest
import torch

from bench.assets import SEGMENTERS
from bench.options import OPTIONS

CPU_BATCHES = (1, 16, 64, 256)
GPU_BATCHES = (256, 1024, 4096, 16384)
SLOW_CPU_CASES = {("weightfree", 256), ("sam2", 64), ("sam2", 256)}
"""CPU env/decode cases kept out of the default run (``-m slow`` or ``-m ''`` adds them)."""
CPU_TRAIN_CASES = (("weightfree", 16), ("weightfree", 64), ("sam2", 16))
GPU_TRAIN_CASES = (("weightfree", 1024), ("weightfree", 4096), ("sam2", 1024), ("sam2", 4096))
SLOW_CPU_TRAIN = {("sam2", 16)}


def _slow(marks: bool) -> list:
    return [pytest.mark.slow] if marks else []


def parametrize(metafunc: pytest.Metafunc) -> None:
    """Batch sizes depend on the device: ``env_case`` = (segmenter, B), ``bench_batch`` = B,
    ``train_case`` = (segmenter, num_envs), ``update_batch`` = num_envs, ``segmenter_name``,
    ``memory_segmenter``.
    The largest CPU cases are marked slow."""
    opts = metafunc.config.stash[OPTIONS]
    cpu = opts.device.type == "cpu"
    batches = CPU_BATCHES if cpu else GPU_BATCHES
    if "env_case" in metafunc.fixturenames:
        params = [pytest.param((s, b), id=f"{s}-B{b}", marks=_slow(cpu and (s, b) in SLOW_CPU_CASES))
                  for s in SEGMENTERS for b in batches]
        metafunc.parametrize("env_case", params)
    if "bench_batch" in metafunc.fixturenames:
        params = [pytest.param(b, id=f"B{b}", marks=_slow(cpu and b == max(batches))) for b in batches]
        metafunc.parametrize("bench_batch", params)
    if "train_case" in metafunc.fixturenames:
        cases = CPU_TRAIN_CASES if cpu else GPU_TRAIN_CASES
        params = [pytest.param((s, b), id=f"{s}-B{b}", marks=_slow(cpu and (s, b) in SLOW_CPU_TRAIN))
                  for s, b in cases]
        metafunc.parametrize("train_case", params)
    if "update_batch" in metafunc.fixturenames:
        sizes = sorted({b for s, b in (CPU_TRAIN_CASES if cpu else GPU_TRAIN_CASES) if s == "weightfree"})
        metafunc.parametrize("update_batch", sizes, ids=[f"B{b}" for b in sizes])
    if "memory_segmenter" in metafunc.fixturenames:  # SAM2 x 1,000 iterations is hours on a CPU
        metafunc.parametrize("memory_segmenter", ["weightfree"] if cpu else list(SEGMENTERS))
    if "segmenter_name" in metafunc.fixturenames:
        metafunc.parametrize("segmenter_name", SEGMENTERS)


def plan(device: torch.device, segmenter: str, batch: int) -> tuple[int, int, int]:
    """``(warmup_rounds, rounds, steps_per_round)`` for an env-step case: a few seconds each on
    a 2-core CPU, a steady state of 10 x 10 steps on a GPU (5 x 5 above B = 1024: ~1 s per
    SAM2 step at B = 16384). A b+ decode costs ~0.2 s per row on one CPU core, the weight-free
    step ~5-10 ms per row."""
    if device.type == "cuda":
        return (3, 10, 10) if batch <= 1024 else (2, 5, 5)
    if segmenter == "sam2":
        return (1, 3, 3) if batch == 1 else (1, 2 if batch <= 16 else 1, 1)
    return {1: (2, 5, 20), 16: (1, 5, 5), 64: (1, 3, 3)}.get(batch, (1, 2, 2))
