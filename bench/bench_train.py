"""PPO through ``ppo.train.Trainer``: the update alone, and end-to-end training steps/s.

* ``test_ppo_update`` -- one ``ppo_update`` (``update_epochs`` x ``num_minibatches`` clipped-PPO
  steps) on a collected ``T x B`` rollout; ``samples_per_s = T * B / update time``. The update
  does not depend on the segmenter, so it runs on the weight-free env's rollouts.
* ``test_train_iteration`` -- ``Trainer.iterate()``: rollout (observe, policy, env step, value,
  reset, T times) + GAE + update; ``steps_per_s = T * B / iteration time``, the number the
  prototype's ~45 steps/s (SB3, SAM2.1 b+) is compared with. ``speedup_vs_baseline`` divides by
  the prototype-style env alone (no policy, no learning), so it understates the training speedup.

The Trainer gets prebuilt envs (``Trainer(cfg, envs=RunEnvs(...))``) over the session's images;
its config is the default ``TrainConfig`` (spatial policy, ``sam_prob`` and action mask
observed, 4 epochs x 4 minibatches) with small ``num_envs``/``num_steps`` on the CPU.

Opt-in: ``--bench-bf16`` runs the iteration under ``torch.autocast(bf16)``; ``--bench-compile``
compiles the policy (``nn.Module.compile``; ``--bench-compile-mode reduce-overhead`` adds CUDA
graphs for both the rollout and the minibatch shapes) and the env step. Both are gated by
``policy_parity`` and ``bench_env.step_parity`` against eager fp32. ``--bench-cuda-graphs``
(the hand-captured env step of ``bench_env``) is not used inside the Trainer, whose
``collect`` calls ``env.step`` and ``env.reset`` separately.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/bench_train.py -p no:cacheprovider --benchmark-only
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import torch

from bench.bench_env import check_parity, fast_step, step_parity
from bench.measure import PeakMemory, sync
from ppo.config import TrainConfig
from ppo.factory import RunEnvs
from ppo.gae import compute_gae
from ppo.loss import ppo_update
from ppo.policies import STATE_VALUE
from ppo.train import CompiledStep, Trainer

PROTOTYPE_TRAIN_STEPS_PER_S = 500_000 / (185.7 * 60)  # the SB3 + SAM2.1 b+ prototype: 500k steps in 185.7 min (~45/s)
POLICY_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}  # log-softmax and relative value, vs eager fp32


def num_steps_for(device: torch.device) -> int:
    """Rollout length T: short on the CPU (seconds per case), CleanRL-like on a GPU."""
    return 8 if device.type == "cuda" else 4


def precision(opts):
    return (torch.autocast(opts.device.type, dtype=torch.bfloat16) if opts.bf16
            else contextlib.nullcontext())


def make_trainer(assets, opts, segmenter: str, num_envs: int, out_dir: str, **overrides
                 ) -> tuple[Trainer, torch.nn.Module]:
    """A Trainer over the session's env for ``segmenter`` (fast paths applied if asked), and an
    eager fp32 copy of its initial policy (the parity reference). ``overrides``: further
    ``TrainConfig`` fields."""
    settings = {"num_steps": num_steps_for(opts.device), **overrides}
    cfg = TrainConfig().replace(exp_name="bench", out_dir=out_dir, seed=0, device=str(opts.device),
                      segmenter=segmenter, num_envs=num_envs,
                      total_timesteps=num_envs * settings["num_steps"] * 100_000,
                      tensorboard=False, progress=False, **settings)
    compiled_env = opts.compile and segmenter == "sam2"
    env = assets.env(segmenter, cfg.env, compiled=compiled_env)
    if opts.compile and not compiled_env:
        env = CompiledStep(env, mode=opts.compile_mode)  # the session's env stays eager
    trainer = Trainer(cfg, envs=RunEnvs(env, env, assets.data, assets.data))
    reference = copy.deepcopy(trainer.policy)
    if opts.compile:
        trainer.policy.compile(fullgraph=True, dynamic=False, mode=opts.compile_mode)
    return trainer, reference


@torch.no_grad()
def policy_parity(trainer: Trainer, eager: torch.nn.Module, opts) -> dict[str, float]:
    """Fast vs eager fp32 policy on one observation batch: max |log-softmax difference| and
    the value difference relative to the largest |value| (the initial policy head is scaled
    by 0.01, so its log-probs are near uniform and the value head is the sharper check)."""
    obs = trainer.env.observe(trainer.state)
    inputs = {k: obs[k] for k in eager.in_keys}
    ref_logits, ref_value = eager(**inputs)
    with precision(opts):
        logits, value = trainer.policy(**inputs)
    logp = (torch.log_softmax(logits.float(), -1) - torch.log_softmax(ref_logits, -1)).abs().max()
    value_err = (value.float() - ref_value).abs().max() / ref_value.abs().max().clamp(min=1e-6)
    return {"logprob_max_diff": float(logp), "value_rel_diff": float(value_err)}


def gate(trainer: Trainer, eager: torch.nn.Module, segmenter: str, assets, opts) -> dict:
    """Parity of the fast paths this trainer uses, vs eager fp32; fails the case if exceeded."""
    if not opts.fast:
        return {}
    policy = policy_parity(trainer, eager, opts)
    tol = POLICY_TOLERANCE["bf16" if opts.bf16 else "fp32"]
    bad = {k: v for k, v in policy.items() if v > tol}
    assert not bad, f"fast policy forward differs from eager fp32: {bad} (allowed {tol})"
    env = assets.env(segmenter, trainer.cfg.env, compiled=opts.compile and segmenter == "sam2")
    step_opts = dataclasses.replace(opts, cuda_graphs=False)  # the Trainer steps without them
    with torch.no_grad():
        step = fast_step(env, step_opts, trainer.local_envs,
                         compiled_env=opts.compile and segmenter == "sam2")
        report = step_parity(env, step, trainer.local_envs)
    check_parity(report, opts.precision)
    return {"policy": policy, "step": report}


def _entry(kind: str, segmenter: str, trainer: Trainer, seconds: float, mem: dict) -> dict:
    cfg = trainer.cfg
    return {"kind": kind, "case": kind.replace("train_", ""), "segmenter": segmenter,
            "num_envs": cfg.ppo.num_envs, "num_steps": cfg.ppo.num_steps,
            "update_epochs": cfg.ppo.update_epochs, "num_minibatches": cfg.ppo.num_minibatches,
            "policy": cfg.policy.kind, "ms_per_iteration": 1e3 * seconds, **mem}


def test_ppo_update(benchmark, update_batch, assets, opts, recorder, tmp_path):
    trainer, eager = make_trainer(assets, opts, "weightfree", update_batch, str(tmp_path))
    parity = gate(trainer, eager, "weightfree", assets, opts)
    with precision(opts):
        trainer.iterate()  # fills the rollout buffer and compiles/warms everything once
    buf, cfg = trainer.buffer, trainer.cfg
    adv, target = compute_gae(buf["reward"], buf[STATE_VALUE][..., 0], buf["next_value"],
                              buf["terminated"], buf["done"], cfg.ppo.gamma, cfg.ppo.gae_lambda)
    buf["advantage"], buf["value_target"] = adv[..., None], target[..., None]

    def run():
        with precision(opts):
            out = ppo_update(trainer.loss_module, trainer.optimizer, buf, trainer.ppo_cfg,
                             generator=trainer.generator)
        sync(opts.device)
        return out

    warm, rounds = (2, 10) if opts.device.type == "cuda" else (1, 3)
    with PeakMemory(opts.device) as mem:
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=warm, iterations=1)
    seconds = benchmark.stats.stats.mean
    entry = _entry("train_update", "-", trainer, seconds, mem.result)
    samples = cfg.ppo.num_envs * cfg.ppo.num_steps
    entry.update(steps_per_s=samples / seconds, samples_per_s=samples / seconds,
                 gradient_steps_per_s=cfg.ppo.update_epochs * cfg.ppo.num_minibatches / seconds)
    if parity:
        entry["parity_vs_eager_fp32"] = parity
    recorder.train.append(entry)
    benchmark.group = "ppo update"
    benchmark.extra_info.update(**entry, **opts.info())


def test_train_iteration(benchmark, train_case, assets, baseline, opts, recorder, tmp_path):
    segmenter, num_envs = train_case
    trainer, eager = make_trainer(assets, opts, segmenter, num_envs, str(tmp_path))
    parity = gate(trainer, eager, segmenter, assets, opts)

    def run():
        with precision(opts):
            out = trainer.iterate()
        sync(opts.device)
        return out

    warm, rounds = (2, 5) if opts.device.type == "cuda" else (1, 2 if segmenter == "sam2" else 3)
    with PeakMemory(opts.device) as mem:
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=warm, iterations=1)
    seconds = benchmark.stats.stats.mean
    cfg = trainer.cfg
    rate = cfg.ppo.num_envs * cfg.ppo.num_steps / seconds
    base = baseline.rate(segmenter)
    entry = _entry("train_iteration", segmenter, trainer, seconds, mem.result)
    entry.update(steps_per_s=rate, baseline_env_steps_per_s=base, speedup_vs_baseline=rate / base,
                 prototype_train_steps_per_s=PROTOTYPE_TRAIN_STEPS_PER_S,
                 speedup_vs_prototype_report=rate / PROTOTYPE_TRAIN_STEPS_PER_S)
    if parity:
        entry["parity_vs_eager_fp32"] = parity
    recorder.train.append(entry)
    benchmark.group = f"train {segmenter}"
    benchmark.extra_info.update(**entry, **opts.info())
