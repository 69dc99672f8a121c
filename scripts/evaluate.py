"""Evaluate a trained checkpoint beside the baselines (oracle, no further clicks, random).

    sam2click-evaluate --checkpoint runs/ppo_click/best.pt   # runs/ppo_click/eval_best_val/

Results go to their own folder, <checkpoint folder>/eval_<checkpoint name>_<split> (never the
training's eval/); an existing results folder is refused unless --overwrite.
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
from gpu_env.datasets.config import DataConfig
from ppo.command_options import (AgentConfig, DeviceConfig, EpisodesConfig, ResultsConfig,
                                 command_registry, overrides_of, require_positive)
from ppo.config import TrainConfig
from ppo.evaluate import evaluate_agent, report
from ppo.factory import DeviceError, build_envs
from ppo.policies import build_policy
from ppo.prior import attach_prior
from ppo.run_dir import RunFolderError, check_results_folder
from sam_batch.atomic_io import DiskFullError

from ._command import cli, command_name, fail

USER_ERRORS = (RunFolderError, CheckpointError, DiskFullError, DeviceError)
"""Errors whose message says what to do: printed without a traceback, exit status 1."""


def user_message(err: BaseException) -> str:
    """The message alone (an ``OSError``'s without its ``[Errno N]`` prefix)."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


DataOverrides = overrides_of(DataConfig, "dataset", "eval_split", "eval_images")
"""The run's data settings this command may change (``--dataset synthetic:7``: frames of another
generator seed; ``--eval-split test``; ``--eval-images N``)."""


@dataclass
class EvaluateConfig:
    """Evaluate a checkpoint on held-out images.

    ``--dataset``, ``--eval-split`` and ``--eval-images`` are the run's own data settings
    (``DataConfig``), changed for this evaluation when given (``DataOverrides``)."""

    agent: AgentConfig = field(default_factory=lambda: AgentConfig(checkpoint=tyro.MISSING))
    """Required here: there is no agent to evaluate without one."""
    results: ResultsConfig = field(default_factory=ResultsConfig)
    """Where the table goes."""
    device: DeviceConfig = field(default_factory=DeviceConfig)
    """Where the command runs."""
    data: DataOverrides = field(default_factory=DataOverrides)
    """The run's data settings to change for this evaluation (unset: the checkpoint's)."""
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    """The evaluation episodes."""
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
    args.episodes.check(command_name("evaluate"))
    require_positive(command_name("evaluate"), eval_images=args.data.get("eval_images"))
    if not args.agent.checkpoint:
        raise fail("evaluate", "--checkpoint must name a checkpoint written by sam2click-train, "
                   "e.g. --checkpoint runs/ppo_click/best.pt.")


def parse(argv: list[str] | None = None) -> EvaluateConfig:
    """The config of a command line, as ``sam2click-evaluate`` parses it."""
    return cli("evaluate", EvaluateConfig, argv, __doc__, registry=command_registry())


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    check_args(args)
    keep_freed_memory()  # process-wide allocator choice, made here at the entry point
    try:
        return evaluate(args)
    except USER_ERRORS as err:
        raise fail("evaluate", user_message(err)) from err


def evaluate(args: EvaluateConfig) -> int:
    path = Path(args.agent.checkpoint)
    device = args.device.resolve()
    ck = load_checkpoint(path, map_location=device)
    if "config" not in ck or "model" not in ck:
        raise CheckpointError(f"{str(path)!r} is a checkpoint but not one written by "
                              f"sam2click-train (no config or model); pass a run's best.pt, "
                              f"last.pt or ckpt_<iter>.pt.")
    cfg = TrainConfig.from_dict(json.loads(ck["config"])).replace(device=str(device), **args.data)
    out = args.results.out or default_out(path, cfg.data.eval_split, args.data.get("dataset"))
    check_results_folder(out, overwrite=args.results.overwrite)
    envs = build_envs(cfg, device, train=False)
    policy = build_policy(cfg.policy, cfg.env, cfg.run.seed, device)
    policy.load_state_dict(ck["model"])
    attach_prior(policy, envs.eval_env)  # the agent's mask prior, and the learned clicker's
    ep = args.episodes
    curves = evaluate_agent(envs.eval_env, envs.eval_data, policy, num_clicks=ep.num_clicks,
                            batch_size=ep.batch_size, seed=ep.seed, baselines=args.baselines,
                            learned_clicker=cfg.policy.prior_steps > 0)  # else an untrained net
    meta = {"checkpoint": str(path), "config": cfg.to_dict(), "num_clicks": ep.num_clicks}
    try:
        table = report(curves, out, meta, table_clicks=cfg.env.max_clicks)
    except DiskFullError as err:
        # Some result files may be written already, and a folder holding results is refused.
        raise DiskFullError(err.errno, f"{err.strerror} The results in {out} are incomplete: "
                                       "after freeing space, re-run the same command with "
                                       "--overwrite (or with --out <another folder>).") from err
    print(table)
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
