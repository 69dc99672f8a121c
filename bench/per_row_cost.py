"""Per-row cost of the env step against B, in interleaved rounds: whether the cost of a
row rises with B.

    OMP_NUM_THREADS=1 python -m bench.per_row_cost --segmenter weightfree --rounds 8
    OMP_NUM_THREADS=1 python -m bench.per_row_cost --segmenter sam2 --rounds 3   # ~3 minutes

The pytest-benchmark cases (``bench_env.py``) time each B in its own block of rounds, one after
the other, so slow drift of the machine shows up as a difference between batch sizes. Here every
round steps each B once, in turn, after a warm-up step of each; the median over rounds is
reported per B. Same setup as the benchmark suite: its dataset and segmenters
(``bench.assets``; SAM2 b+ with random weights over real encoder features), the prototype env
config, uniformly random actions, freed host memory kept as the commands keep it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.assets import load_bench_dataset, segmenter_config
from bench.measure import random_actions
from gpu_env.config import PROTOTYPE_ENV
from gpu_env.env import ClickEnv
from gpu_env.host_allocator import keep_freed_memory
from sam_batch.atomic_io import atomic_write
from sam_batch.factory import build_sam2_model, build_segmenter

STEPS = {"weightfree": {16: 16, 64: 4, 256: 2}, "sam2": {16: 1, 64: 1, 256: 1}}
"""Env steps per round and B (a round of each B takes about as long for the weight-free env)."""


def build_env(segmenter: str, images: int) -> ClickEnv:
    data = load_bench_dataset(images)
    cpu = torch.device("cpu")
    if segmenter == "sam2":
        from sam_batch.encoder import encode_images

        model = build_sam2_model(segmenter_config("sam2"), cpu)
        feats = encode_images(model, [data.load_original(i)[0] for i in range(len(data))],
                              batch_size=4, dtype=torch.float16)
        seg = build_segmenter(segmenter_config("sam2"), data.images, cpu, model=model, features=feats)
    else:
        seg = build_segmenter(segmenter_config("weightfree"), data.images, cpu)
    return ClickEnv(seg, data, PROTOTYPE_ENV)


@torch.no_grad()
def measure(env: ClickEnv, steps: dict[int, int], rounds: int) -> dict[int, list[float]]:
    """ms per row of each round, per B."""
    runs = {}
    for b, n in steps.items():  # warm-up: one round each
        state = env.initial_state(b, seed=0)
        actions = random_actions(env.num_actions, n, b, env.device, seed=1)
        for t in range(n):
            state, _, _ = env.step_autoreset(state, actions[t])
        runs[b] = [state, actions]
    out: dict[int, list[float]] = {b: [] for b in steps}
    for _ in range(rounds):
        for b, n in steps.items():
            state, actions = runs[b]
            t0 = time.perf_counter()
            for t in range(n):
                state, _, _ = env.step_autoreset(state, actions[t])
            out[b].append((time.perf_counter() - t0) / (n * b) * 1e3)
            runs[b][0] = state
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--segmenter", choices=sorted(STEPS), default="weightfree")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (each steps every B once)")
    p.add_argument("--images", type=int, default=2, help="benchmark images (B repeats them)")
    p.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    a = p.parse_args(argv)
    if a.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {a.rounds}")
    if a.out is not None and a.out.exists():
        raise SystemExit(f"--out {a.out} already exists; pass a new path (results are never "
                         f"overwritten)")
    kept = keep_freed_memory()
    res = measure(build_env(a.segmenter, a.images), STEPS[a.segmenter], a.rounds)
    base = statistics.median(res[min(res)])
    summary = {"segmenter": a.segmenter, "rounds": a.rounds, "threads": torch.get_num_threads(),
               "keep_freed_memory": kept, "command": "python -m bench.per_row_cost "
               + " ".join(argv if argv is not None else sys.argv[1:]),
               "ms_per_row": {b: {"median": statistics.median(v), "min": min(v), "rounds": v}
                              for b, v in res.items()}}
    for b, v in res.items():
        m = statistics.median(v)
        print(f"{a.segmenter:10s} B={b:4d}: {m:8.3f} ms per row (median of {a.rounds}; "
              f"{100 * (m / base - 1):+.1f} % vs B={min(res)})")
    if a.out:
        atomic_write(a.out, lambda f: json.dump(summary, f, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
