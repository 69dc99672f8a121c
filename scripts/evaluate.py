"""Evaluate a trained checkpoint beside the baselines (oracle, no further clicks, random).

    sam2click-evaluate --checkpoint runs/ppo_click/best.pt
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from ppo.checkpoint import load_checkpoint
from ppo.config import TrainConfig
from ppo.evaluate import evaluate_agent, report
from ppo.factory import build_envs, resolve_device
from ppo.policies import build_policy
from ppo.prior import attach_prior


@dataclass
class EvaluateConfig:
    """Evaluate a checkpoint on held-out images."""

    checkpoint: str
    """Checkpoint written by scripts.train (best.pt, last.pt or ckpt_<iter>.pt)."""
    out: str | None = None
    """Output folder for results.json/csv and the plot (default: <checkpoint dir>/eval)."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    dataset: str | None = None
    """Override the run's dataset (e.g. ``synthetic:7``: frames of another generator seed)."""
    eval_split: str | None = None
    """Override the run's evaluation split."""
    eval_images: int | None = None
    """Override the number of held-out images."""
    num_clicks: int = 20
    """Clicks per episode (the initial one included; NoC needs 20)."""
    batch_size: int = 64
    """Episodes evaluated at once."""
    baselines: bool = True
    """Also evaluate the oracle, no-further-clicks and random baselines."""
    seed: int = 0
    """Seed of the random-click baseline."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(EvaluateConfig, args=argv, description=__doc__)
    path = Path(args.checkpoint)
    device = resolve_device(args.device)
    ck = load_checkpoint(path, map_location=device)
    cfg = TrainConfig.from_dict(json.loads(ck["config"]))
    changes = {"device": str(device)}
    if args.dataset:
        changes["dataset"] = args.dataset
    if args.eval_split:
        changes["eval_split"] = args.eval_split
    if args.eval_images:
        changes["eval_images"] = args.eval_images
    cfg = cfg.replace(**changes)
    envs = build_envs(cfg, device, train=False)
    policy = build_policy(cfg.policy, cfg.env, cfg.run.seed, device)
    policy.load_state_dict(ck["model"])
    attach_prior(policy, envs.eval_env)  # the agent's mask prior, and the learned clicker's
    curves = evaluate_agent(envs.eval_env, envs.eval_data, policy, num_clicks=args.num_clicks,
                            batch_size=args.batch_size, seed=args.seed, baselines=args.baselines)
    out = Path(args.out) if args.out else path.parent / "eval"
    meta = {"checkpoint": str(path), "config": cfg.to_dict(), "num_clicks": args.num_clicks}
    print(report(curves, out, meta, table_clicks=cfg.env.max_clicks))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
