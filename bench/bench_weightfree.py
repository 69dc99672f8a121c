"""Decode throughput of the weight-free geodesic segmenter on the CPU (and CUDA if present).

  .venv/bin/python -m pytest bench/bench_weightfree.py -q -p no:cacheprovider \
      --benchmark-columns=mean,stddev,rounds --benchmark-sort=name

Each case decodes B episodes with a full click buffer (K = 6: the user click plus 5 agent clicks,
random labels, some padding), i.e. one environment step. ``extra_info`` records decodes/s, and
the peak CUDA memory on a GPU. The baseline beside it is the same decode at ``grid = 128``
(finer boundaries, ~4x the work) and the per-episode loop a naive caller would write.
"""

from __future__ import annotations

import pytest
import torch

from sam_batch.geodesic import GeodesicConfig, GeodesicSegmenter

N_IMAGES, K = 64, 6
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _inputs(B: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(B)
    ids = torch.randint(0, N_IMAGES, (B,), generator=g)
    points = torch.rand(B, K, 2, generator=g) * 1024
    labels = torch.randint(0, 2, (B, K), generator=g)
    labels[:, 0] = 1
    labels[:, -1] = -1  # one padding slot, as mid-episode
    return ids.to(device), points.to(device), labels.to(device)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    # Synthetic frames rather than noise: costs do not depend on content, but keep it realistic.
    from gpu_env.datasets import load_dataset

    return load_dataset("synthetic", split="val", size=256, count=N_IMAGES, seed=0).images


def _run(benchmark, seg: GeodesicSegmenter, B: int, device: str, per_episode: bool = False) -> None:
    ids, points, labels = _inputs(B, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> None:
        if per_episode:
            for b in range(B):
                seg.decode(ids[b:b + 1], points[b:b + 1], labels[b:b + 1])
        else:
            seg.decode(ids, points, labels)
        sync()

    for _ in range(3):  # warm-up
        step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        benchmark.pedantic(step, rounds=10 if B > 1 else 50, iterations=1)
    benchmark.extra_info["decodes_per_s"] = B / benchmark.stats.stats.mean
    benchmark.extra_info["threads"] = torch.get_num_threads()
    if device == "cuda":
        benchmark.extra_info["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B", [1, 16, 64])
def test_decode_grid64(benchmark, images, B, device):
    benchmark.group = f"decode B={B} {device}"
    _run(benchmark, GeodesicSegmenter(images.to(device)), B, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B", [1, 16, 64])
def test_decode_grid128_baseline(benchmark, images, B, device):
    benchmark.group = f"decode B={B} {device}"
    _run(benchmark, GeodesicSegmenter(images.to(device), GeodesicConfig(grid=128)), B, device)


@pytest.mark.parametrize("B", [16, 64])
def test_decode_per_episode_loop_baseline(benchmark, images, B):
    benchmark.group = f"decode B={B} cpu"
    _run(benchmark, GeodesicSegmenter(images), B, "cpu", per_episode=True)
