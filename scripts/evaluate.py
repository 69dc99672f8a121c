"""Evaluate a trained checkpoint beside the baselines (oracle, no further clicks, random).

    sam2click-evaluate --checkpoint runs/ppo_click/best.pt   # runs/ppo_click/eval_best_val/

Results go to their own folder, ``<checkpoint dir>/eval_<checkpoint name>_<split>`` (never the
training's ``eval/``); an existing results folder is refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from gpu_env.host_allocator import keep_freed_memory
from ppo.checkpoint import CheckpointError, load_checkpoint
from ppo.command_options import DeviceConfig, EpisodesConfig, ResultsConfig, require_positive
from ppo.config import TrainConfig
from ppo.evaluate import evaluate_agent, report
from ppo.factory import DeviceError, build_envs
from ppo.policies import build_policy
from ppo.prior import attach_prior
from ppo.run_dir import RunFolderError, check_results_folder
from sam_batch.atomic_io import DiskFullError

USER_ERRORS = (RunFolderError, CheckpointError, DiskFullError, DeviceError)
"""Errors whose message says what to do: printed without a traceback, exit status 1."""


def user_message(err: BaseException) -> str:
    """The message alone (an ``OSError``'s without its ``[Errno N]`` prefix)."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


@dataclass
class EvaluateConfig:
    """Evaluate a checkpoint on held-out images.

    ``dataset``, ``eval_split`` and ``eval_images`` override the checkpoint's data section
    (None: the run's own value), so they have no default of their own."""

    checkpoint: str
    """Checkpoint written by scripts.train (best.pt, last.pt or ckpt_<iter>.pt)."""
    results: ResultsConfig = field(default_factory=ResultsConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    dataset: str | None = None
    """Override the run's dataset (e.g. ``synthetic:7``: frames of another generator seed)."""
    eval_split: str | None = None
    """Override the run's evaluation split."""
    eval_images: int | None = None
    """Override the number of held-out images."""
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    baselines: bool = True
    """Also evaluate the oracle, no-further-clicks and random baselines."""


def default_out(checkpoint: Path, split: str, dataset: str | None = None) -> Path:
    """``<checkpoint dir>/eval_<checkpoint stem>_<split>`` (``_<dataset>`` appended when the
    dataset is overridden), beside and never over the training's own ``eval/``."""
    name = f"eval_{checkpoint.stem}_{split}"
    if dataset:
        name += "_" + re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-")
    return checkpoint.parent / name


def check_args(args: EvaluateConfig) -> None:
    """Reject values that cannot work, naming them (before any loading)."""
    args.episodes.check("scripts.evaluate")
    require_positive("scripts.evaluate", eval_images=args.eval_images)


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(tyro.conf.OmitArgPrefixes[EvaluateConfig], args=argv, description=__doc__)
    check_args(args)
    keep_freed_memory()  # process-wide allocator choice, made here at the entry point
    try:
        return evaluate(args)
    except USER_ERRORS as err:
        raise SystemExit(f"scripts.evaluate: error: {user_message(err)}") from err


def evaluate(args: EvaluateConfig) -> int:
    path = Path(args.checkpoint)
    device = args.device.resolve()
    ck = load_checkpoint(path, map_location=device)
    if "config" not in ck or "model" not in ck:
        raise CheckpointError(f"{str(path)!r} is a checkpoint but not one written by "
                              f"scripts.train (no config or model); pass a run's best.pt, "
                              f"last.pt or ckpt_<iter>.pt.")
    cfg = TrainConfig.from_dict(json.loads(ck["config"]))
    changes = {"device": str(device)}
    if args.dataset:
        changes["dataset"] = args.dataset
    if args.eval_split:
        changes["eval_split"] = args.eval_split
    if args.eval_images is not None:
        changes["eval_images"] = args.eval_images
    cfg = cfg.replace(**changes)
    out = args.results.out or default_out(path, cfg.data.eval_split, args.dataset)
    check_results_folder(out, overwrite=args.results.overwrite)
    envs = build_envs(cfg, device, train=False)
    policy = build_policy(cfg.policy, cfg.env, cfg.run.seed, device)
    policy.load_state_dict(ck["model"])
    attach_prior(policy, envs.eval_env)  # the agent's mask prior, and the learned clicker's
    ep = args.episodes
    curves = evaluate_agent(envs.eval_env, envs.eval_data, policy, num_clicks=ep.num_clicks,
                            batch_size=ep.batch_size, seed=ep.seed, baselines=args.baselines)
    meta = {"checkpoint": str(path), "config": cfg.to_dict(), "num_clicks": ep.num_clicks}
    print(report(curves, out, meta, table_clicks=cfg.env.max_clicks))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
