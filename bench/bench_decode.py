"""Decode time per batch: the batched SAM2 decoder beside the per-episode reference loop.

hiera_b+ architecture at 1024 (random weights: same cost as the real checkpoint), random cached
features in half precision, ``mask_input`` on for every row, 1..5 clicks per row (``-1``
padding), multimask on the first-click rows. Both implementations decode the same inputs in the
same session; each result's ``extra_info`` carries ``ms_per_episode`` and the peak memory.

    .venv/bin/python -m pytest bench/bench_decode.py -p no:cacheprovider -m '' \\
        --benchmark-columns=mean,min,max,rounds

B = 64 on the CPU is marked slow (about a minute for both); ``-m ''`` includes it. The suite's
options apply (``--bench-device cuda``, ``--bench-bf16``, ``--bench-compile``,
``--bench-decode-chunk``; see ``bench/conftest.py``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from bench.assets import SAM2_CONFIG
from bench.measure import PeakMemory, sync
from bench.options import OPTIONS
from sam_batch.decoder import BatchedSAM2Decoder
from sam_batch.model import build_sam
from sam_batch.reference import reference_decode
from references.sam_fixtures import random_episodes, random_features

N_IMAGES = 8
K = 5
CPU_BATCHES = (1, 16, 64)
GPU_BATCHES = (1, 64, 256, 1024)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``decode_batch``: the batch sizes for the session's device (B = 64 slow on the CPU)."""
    if "decode_batch" in metafunc.fixturenames:
        cpu = metafunc.config.stash[OPTIONS].device.type == "cpu"
        params = [pytest.param(b, id=f"B{b}", marks=[pytest.mark.slow] if cpu and b == 64 else [])
                  for b in (CPU_BATCHES if cpu else GPU_BATCHES)]
        metafunc.parametrize("decode_batch", params)


@pytest.fixture(scope="module")
def setup(opts):
    model = build_sam(SAM2_CONFIG, None, device=opts.device, seed=0)
    feats = random_features(model, N_IMAGES, seed=0, dtype=opts.feature_dtype)
    feats = type(feats)(*(t.to(opts.device) for t in feats))
    # The decoder's own device-dependent chunk unless --bench-decode-chunk was given.
    dec = BatchedSAM2Decoder(model, feats, max_chunk=opts.decode_chunk, compile=opts.compile)
    return model, feats, dec


@pytest.mark.parametrize("impl", ["batched", "reference"])
def test_decode(benchmark, setup, opts, impl: str, decode_batch: int) -> None:
    model, feats, dec = setup
    b = decode_batch
    ep = random_episodes(b, K, N_IMAGES, 1024, 256, seed=b)
    ids, points, labels, mask_input, _, multimask, _ = (t.to(opts.device) for t in ep)
    has_mask = torch.ones(b, dtype=torch.bool, device=opts.device)  # mask_input on for every row
    precision = torch.autocast(opts.device.type, dtype=torch.bfloat16) if opts.bf16 else contextlib.nullcontext()

    def run():
        with precision:
            if impl == "batched":
                out = dec.decode(ids, points, labels, mask_input, has_mask, multimask)
            else:
                out = reference_decode(model, feats, ids, points, labels, mask_input, has_mask, multimask)
        sync(opts.device)
        return out

    cpu = opts.device.type == "cpu"
    rounds = (5 if b == 1 else 3 if b <= 16 else 2) if cpu else 10
    benchmark.group = f"decode B={b}"
    with PeakMemory(opts.device) as mem:
        out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1 if cpu else 3, iterations=1)
    assert out.logits.shape == (b, 1, 256, 256)
    mean_s, min_s = benchmark.stats.stats.mean, benchmark.stats.stats.min
    benchmark.extra_info.update(
        impl=impl, batch=b, max_chunk=dec.max_chunk, ms_per_episode=1e3 * mean_s / b, ms_per_episode_min=1e3 * min_s / b,
        **opts.info(), **mem.result,
    )
    print(f"\n{impl:9s} B={b:4d}: {1e3 * mean_s:9.1f} ms/batch (min {1e3 * min_s:9.1f})  "
          f"{1e3 * mean_s / b:8.1f} ms/episode (min {1e3 * min_s / b:8.1f})")
