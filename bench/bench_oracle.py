"""Batched RITM oracle (gpu_env.oracle) against the SciPy port of RITM's clicker, per batch size.

Run:  .venv/bin/python -m pytest bench/bench_oracle.py -p no:cacheprovider --benchmark-group-by=param:batch
(add ``-m gpu`` for the CUDA cases; prefix ``OMP_NUM_THREADS=1`` on a shared CPU box, where
torch's spinning OpenMP workers otherwise slow down by an order of magnitude under contention).

Each case times one oracle query for a whole batch of 256x256 masks: the device version in one
call, the reference as RITM runs it, a Python loop over ``Clicker._get_next_click``. Inputs are
polyp-like discs and a prediction that misses part of each and adds a false-positive blob.
On CUDA the peak allocated memory is recorded in ``extra_info``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpu_env.oracle import ritm_click
from references.ritm_clicker import Clicker

SIZE = 256
BATCHES = [1, 16, 64]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _discs(batch: int, gen: torch.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    centre = torch.randint(SIZE // 4, 3 * SIZE // 4, (batch, 2, 1, 1), generator=gen)
    radius = torch.randint(SIZE // 10, SIZE // 3, (batch, 1, 1), generator=gen)
    return (yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2 <= radius**2


def _inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    gt = _discs(batch, gen)
    pred = (gt & _discs(batch, gen)) | (_discs(batch, gen) & ~gt)
    return pred, gt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", BATCHES)
def test_oracle_batched(benchmark, batch, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pred, gt = (t.to(device) for t in _inputs(batch))
    not_clicked = torch.ones_like(gt)

    def run():
        click = ritm_click(pred, gt, not_clicked)
        if device == "cuda":
            torch.cuda.synchronize()  # time the work, not the launch
        return click

    run()  # warm-up outside the timed rounds (allocator, kernels)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    click = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    if device == "cuda":
        benchmark.extra_info["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    benchmark.extra_info["per_mask_ms"] = benchmark.stats.stats.mean * 1e3 / batch
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    assert click.has_error.all()


@pytest.mark.parametrize("batch", BATCHES)
def test_oracle_scipy_reference(benchmark, batch):
    pred, gt = (t.numpy() for t in _inputs(batch))
    clickers = [Clicker(gt_mask=g.astype(np.int64)) for g in gt]

    def run():
        return [c._get_next_click(p) for c, p in zip(clickers, pred)]

    clicks = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    benchmark.extra_info["per_mask_ms"] = benchmark.stats.stats.mean * 1e3 / batch
    assert len(clicks) == batch
