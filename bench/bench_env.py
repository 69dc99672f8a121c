"""Env step throughput: the batched ``ClickEnv`` against the prototype-style baseline.

For each segmenter (SAM2.1 b+ with random weights and ``mask_input`` on; the weight-free
geodesic segmenter) and batch size B (CPU 1/16/64/256, CUDA 256/1024/4096/16384), one round
runs ``steps`` calls of ``ClickEnv.step_autoreset`` (decode, metrics, reward, heatmaps, the
final observation, partial reset) with uniformly random actions, after warm-up rounds.
``steps/s = B * steps / mean round time``; ``speedup_vs_baseline`` divides it by the baseline's
steps/s measured in the same process on the same device (``test_prototype_baseline``, which
runs first: one episode per round, NumPy/SciPy on the host, see ``references/prototype_baseline.py``).

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/bench_env.py -p no:cacheprovider --benchmark-only

Opt-in fast paths (``--bench-bf16``, ``--bench-compile``, ``--bench-cuda-graphs``) are built
by ``fast_step`` and gated by ``step_parity``: from the same states and actions, the fast step
and eager fp32 must agree within ``TOLERANCES`` or the case fails before it is timed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from tensordict import TensorDict
from torch import Tensor

from bench.cases import plan
from bench.measure import PeakMemory, random_actions, sync
from references.prototype_baseline import run_episodes
from gpu_env.obs_spec import OBS
from gpu_env.env import ClickEnv

StepFn = Callable[[TensorDict, Tensor], tuple[TensorDict, TensorDict, TensorDict]]

TOLERANCES = {
    # Random-weight SAM2 gives low-confidence logits (many pixels near 0), so the pixel-level
    # check is loose and the Dice/reward checks, what training consumes, are the tight ones.
    # compile / CUDA graphs: the same fp32 math, re-ordered or fused.
    "fp32": {"mask_disagreement": 1e-2, "max_dice_diff": 1e-2, "mean_dice_diff": 1e-3,
             "max_reward_diff": 2e-2},
    # bf16 keeps 8 mantissa bits (measured on CPU, b+ random weights, B = 4..16: 0.3-4.6 % of
    # mask pixels, max |dDice| 6e-3, mean 4e-4).
    "bf16": {"mask_disagreement": 1e-1, "max_dice_diff": 5e-2, "mean_dice_diff": 1e-2,
             "max_reward_diff": 1e-1},
}


# ---------------------------------------------------------------------------------- fast paths
def autocast_step(step: StepFn, device: torch.device) -> StepFn:
    """``step`` under ``torch.autocast(bf16)``: matmuls/convs in bf16, metrics stay fp32 (the env
    casts logits to fp32 and computes Dice/boundary on booleans)."""

    def run(state: TensorDict, action: Tensor):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return step(state, action)

    return run


class GraphedStep:
    """``step_autoreset`` captured once as a CUDA graph at a fixed batch size.

    The graph reads the state from static buffers and writes the next state back into them,
    so a replay is one whole env step with no Python and no allocation. Pass the state this
    object returned last time (or any state of the same shapes: it is copied in). ``out`` and
    the final observation are static buffers, overwritten by the next replay.
    """

    def __init__(self, step: StepFn, state: TensorDict, action: Tensor, warmup: int = 3) -> None:
        if state.device is None or state.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA state, got device {state.device}; "
                             "drop --bench-cuda-graphs on the CPU")
        self.state = state.clone()
        self.action = action.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: lazy inits, autotuning
            for _ in range(warmup):
                step(self.state.clone(), self.action)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            nxt, self.out, self.obs = step(self.state, self.action)
            self.state.update_(nxt)

    def __call__(self, state: TensorDict, action: Tensor) -> tuple[TensorDict, TensorDict, TensorDict]:
        if state is not self.state:
            self.state.update_(state)
        self.action.copy_(action)
        self.graph.replay()
        return self.state, self.out, self.obs


def fast_step(env: ClickEnv, opts, batch: int, compiled_env: bool) -> StepFn:
    """The step the options ask for (eager fp32 when none). ``compiled_env``: ``env`` already
    decodes through a compiled decoder (SAM2: the per-chunk decode is compiled instead of the
    whole step, whose Python chunk loop would be unrolled B / chunk times)."""
    step: StepFn = env.step_autoreset
    if opts.bf16:
        step = autocast_step(step, opts.device)
    if opts.compile and not compiled_env:
        step = torch.compile(step, fullgraph=True, dynamic=False, mode=opts.compile_mode)
    if opts.cuda_graphs:
        state = env.initial_state(batch, seed=123)
        step = GraphedStep(step, state, random_actions(env.num_actions, 1, batch, opts.device, 123)[0])
    return step


@torch.no_grad()
def step_parity(env: ClickEnv, step: StepFn, batch: int, steps: int = 3, seed: int = 7) -> dict:
    """Compare ``step`` with eager fp32 ``env.step_autoreset`` from the same states and actions
    (the eager trajectory is followed, so errors do not compound). Returns the worst mask
    disagreement (fraction of observation mask pixels), Dice and reward differences."""
    state = env.initial_state(batch, seed)
    actions = random_actions(env.num_actions, steps, batch, env.device, seed)
    worst = {"mask_disagreement": 0.0, "max_dice_diff": 0.0, "mean_dice_diff": 0.0,
             "max_reward_diff": 0.0}
    for t in range(steps):
        ref_state, ref_out, ref_obs = env.step_autoreset(state, actions[t])
        _, out, obs = step(state.clone(), actions[t])
        dice_diff = (out["dice"] - ref_out["dice"]).abs()
        stats = {
            "mask_disagreement": (obs[OBS][:, 3] != ref_obs[OBS][:, 3]).float().mean(),
            "max_dice_diff": dice_diff.max(),
            "mean_dice_diff": dice_diff.mean(),
            "max_reward_diff": (out["reward"] - ref_out["reward"]).abs().max(),
        }
        for k, v in stats.items():
            worst[k] = max(worst[k], float(v))
        state = ref_state
    return worst


def check_parity(report: dict, precision: str) -> None:
    """Fail the case when a fast path drifts from eager fp32 beyond ``TOLERANCES``."""
    tol = TOLERANCES["bf16" if precision.startswith("bf16") else "fp32"]
    bad = {k: (report[k], tol[k]) for k in tol if report[k] > tol[k]}
    assert not bad, (f"fast path disagrees with eager fp32 beyond tolerance "
                     f"(measured, allowed): {bad}; full report {report}")


# ---------------------------------------------------------------------------------- cases
def test_prototype_baseline(benchmark, segmenter_name, assets, baseline, opts):
    """The old way: one episode per round, random actions, predictor call + NumPy per step."""
    env = assets.baseline_env(segmenter_name)
    warm, timed = baseline.episodes(segmenter_name)
    seeds = itertools.count()
    steps_per_round = env.config.max_clicks  # no target Dice: every episode runs to truncation

    def run() -> int:
        return run_episodes(env, 1, seed=next(seeds))

    with PeakMemory(opts.device) as mem:
        done = benchmark.pedantic(run, rounds=timed, warmup_rounds=warm, iterations=1)
    assert done == steps_per_round
    rate = steps_per_round / benchmark.stats.stats.mean
    entry = {"segmenter": segmenter_name, "steps_per_s": rate, "ms_per_step": 1e3 / rate,
             "episodes": timed, **mem.result}
    baseline.store(segmenter_name, entry)
    benchmark.group = f"env {segmenter_name}"
    benchmark.extra_info.update(kind="baseline_env", batch=1, precision="fp32",
                                device=str(opts.device), **entry)


def test_env_step(benchmark, env_case, assets, baseline, opts, recorder):
    """Batched env steps/s at B, side by side with the baseline."""
    segmenter, batch = env_case
    compiled_env = opts.compile and segmenter == "sam2"
    env = assets.env(segmenter, compiled=compiled_env)
    warm, rounds, steps = plan(opts.device, segmenter, batch)
    parity = None
    with torch.no_grad():
        step = fast_step(env, opts, batch, compiled_env)
        if opts.fast:
            parity = step_parity(env, step, batch)
            check_parity(parity, opts.precision)
        actions = random_actions(env.num_actions, steps, batch, opts.device, seed=1)
        holder = {"state": env.initial_state(batch, seed=0)}

    def run() -> None:
        with torch.no_grad():
            state = holder["state"]
            for t in range(steps):
                state, _, _ = step(state, actions[t])
            sync(opts.device)
            holder["state"] = state

    with PeakMemory(opts.device) as mem:
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=warm, iterations=1)
    rate = batch * steps / benchmark.stats.stats.mean
    base = baseline.rate(segmenter)
    entry = {"kind": "env_step", "segmenter": segmenter, "batch": batch, "steps_per_round": steps,
             "steps_per_s": rate, "ms_per_step": 1e3 * benchmark.stats.stats.mean / steps,
             "baseline_steps_per_s": base, "speedup_vs_baseline": rate / base, **mem.result}
    if parity is not None:
        entry["parity_vs_eager_fp32"] = parity
    recorder.env.append(entry)
    benchmark.group = f"env {segmenter}"
    benchmark.extra_info.update(**entry, **opts.info())
