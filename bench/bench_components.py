"""Where an env step's time goes: each piece alone, on the states the env really visits.

Every case takes a mid-episode state (``initial_state(B)`` then two random clicks, so three
valid clicks per row and SAM2's ``mask_input`` on) and times one call for the whole batch:

* ``decode``   -- ``segmenter.decode`` exactly as ``ClickEnv.step_click`` calls it (per
  segmenter). ``bench_decode.py`` times SAM2's batched decode against the per-episode
  reference loop on random features; this case is the decode inside the env's step.
* ``metrics``  -- Dice and the boundary F-score of the new mask (the reward's terms).
* ``observe``  -- the observation TensorDict: the six prototype channels, and the training
  configuration's extra ``sam_prob`` and ``action_mask`` entries.
* ``reset``    -- a partial reset of every row (gathers of the per-image precomputed episode).
* ``oracle``   -- the batched RITM clicker (evaluation and simulated-user mode; not in the
  training step). ``bench_oracle.py`` compares it with the SciPy port, per mask.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/bench_components.py -p no:cacheprovider --benchmark-only
"""

from __future__ import annotations

import pytest
from dataclasses import replace
import torch

from bench.bench_env import TOLERANCES
from bench.measure import PeakMemory, random_actions, sync
from gpu_env.config import PROTOTYPE_ENV
from gpu_env.env import ClickEnv
from gpu_env.metrics import dice
from gpu_env.oracle import ritm_click
from gpu_env.reward import boundary_score

TRAIN_OBS = replace(PROTOTYPE_ENV, obs_sam_prob=True, action_mask=True)  # what the Trainer's default env observes


def _rounds(device: torch.device, cost: str, batch: int) -> tuple[int, int]:
    """``(warmup, rounds)``: ``cost="sam2"`` is a b+ decode (~0.2 s per row on one CPU core)."""
    if device.type == "cuda":
        return 3, 20
    if cost == "sam2":
        return (1, 3) if batch == 1 else (1, 2 if batch <= 16 else 1)
    return (1, 5) if batch <= 64 else (1, 3)


@torch.no_grad()
def mid_episode(env: ClickEnv, batch: int, clicks: int = 2):
    """The state after ``clicks`` random agent clicks in every row."""
    state = env.initial_state(batch, seed=0)
    for a in random_actions(env.num_actions, clicks, batch, env.device, seed=3):
        state, _ = env.step(state, a)
    return state


def _time(benchmark, fn, opts, warm: int, rounds: int) -> dict:
    def run():
        with torch.no_grad():
            out = fn()
        sync(opts.device)
        return out

    with PeakMemory(opts.device) as mem:
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=warm, iterations=1)
    return {"ms_per_call": 1e3 * benchmark.stats.stats.mean, **mem.result}


def _record(benchmark, recorder, opts, component: str, batch: int, timing: dict, **extra) -> None:
    entry = {"kind": "component", "component": component, "batch": batch, **extra, **timing}
    recorder.components.append(entry)
    benchmark.group = f"component {component}"
    benchmark.extra_info.update(**entry, **opts.info())


def test_decode(benchmark, env_case, assets, opts, recorder):
    segmenter, batch = env_case
    env = assets.env(segmenter)
    state = mid_episode(env, batch)
    seg = assets.segmenter(segmenter, compiled=opts.compile)
    ones = torch.ones(batch, dtype=torch.bool, device=opts.device)
    args = (state["image_id"], state["points"], state["labels"])
    kwargs = {"mask_input": state["logits"], "has_mask_input": ones, "multimask": False}

    def decode():
        if opts.bf16:
            with torch.autocast(opts.device.type, dtype=torch.bfloat16):
                return seg.decode(*args, **kwargs)
        return seg.decode(*args, **kwargs)

    extra = {"segmenter": segmenter}
    if opts.fast:  # gate: the fast decode's masks against eager fp32
        with torch.no_grad():
            ref = env.segmenter.decode(*args, **kwargs).logits > 0
            fast = decode().logits > 0
        disagreement = float((ref != fast).float().mean())
        tol = TOLERANCES["bf16" if opts.bf16 else "fp32"]["mask_disagreement"]
        assert disagreement <= tol, f"fast decode: {disagreement:.2e} of mask pixels differ (allowed {tol})"
        extra["parity_mask_disagreement"] = disagreement
    warm, rounds = _rounds(opts.device, segmenter, batch)
    timing = _time(benchmark, decode, opts, warm, rounds)
    _record(benchmark, recorder, opts, "decode", batch, timing, **extra)


def test_metrics(benchmark, bench_batch, assets, opts, recorder):
    batch = bench_batch
    env = assets.env("weightfree")
    state = mid_episode(env, batch)
    ids = state["image_id"]
    gt, mask = env.gt[ids], state["mask"]

    def metrics():  # as step_click computes them (GT-only morphology precomputed per image)
        return dice(mask, gt), boundary_score(mask, gt, env.config, tuple(t[ids] for t in env.gt_terms))

    timing = _time(benchmark, metrics, opts, *_rounds(opts.device, "light", batch))
    _record(benchmark, recorder, opts, f"metrics[dice+{env.config.boundary_metric}]", batch, timing)


@pytest.mark.parametrize("obs_config", ["six_channels", "train"])
def test_observe(benchmark, bench_batch, obs_config, assets, opts, recorder):
    batch = bench_batch
    env = assets.env("weightfree", PROTOTYPE_ENV if obs_config == "six_channels" else TRAIN_OBS)
    state = mid_episode(env, batch)
    timing = _time(benchmark, lambda: env.observe(state), opts, *_rounds(opts.device, "light", batch))
    _record(benchmark, recorder, opts, f"observe[{obs_config}]", batch, timing)


def test_reset(benchmark, bench_batch, assets, opts, recorder):
    batch = bench_batch
    env = assets.env("weightfree")
    state = mid_episode(env, batch)
    rows = torch.ones(batch, dtype=torch.bool, device=opts.device)
    timing = _time(benchmark, lambda: env.reset(state, rows), opts, *_rounds(opts.device, "light", batch))
    _record(benchmark, recorder, opts, "reset[all rows]", batch, timing)


def test_oracle(benchmark, bench_batch, assets, opts, recorder):
    batch = bench_batch
    env = assets.env("weightfree")
    state = mid_episode(env, batch)
    gt = env.gt[state["image_id"]]
    timing = _time(benchmark, lambda: ritm_click(state["mask"], gt), opts,
                   *_rounds(opts.device, "light", batch))
    _record(benchmark, recorder, opts, "oracle[ritm]", batch, timing)
