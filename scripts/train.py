"""Train a click agent with PPO, then evaluate it beside the baselines and print the table.

    sam2click-train                          # synthetic images, weight-free segmenter, CPU
    sam2click-train --config runs/ppo_click/config.json --seed 2   # a saved run's settings
    sam2click-train --print-config           # the settings a run would use, as JSON
    torchrun --nproc_per_node=N -m sam2click_cli.train --device cuda ...   # N GPUs
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._command import fail
from ._config_file import parse

from gpu_env.host_allocator import freed_memory_kept
from ppo import distributed as dist_utils
from ppo.checkpoint import CheckpointError
from ppo.config import TrainConfig
from ppo.evaluate import evaluate_agent, report
from ppo.factory import DeviceError
from ppo.resume import ResumeError
from ppo.run_dir import RunFolderError
from ppo.train import Trainer
from sam_batch.atomic_io import DiskFullError

USER_ERRORS = (RunFolderError, ResumeError, CheckpointError, DiskFullError, DeviceError)
"""Errors whose message says what to do: printed without a traceback, exit status 1."""


def user_message(err: BaseException) -> str:
    """The message alone (an ``OSError``'s without its ``[Errno N]`` prefix)."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def train_and_evaluate(cfg: TrainConfig) -> Path | None:
    """Train ``cfg``, then (on rank 0) evaluate and print the table. Returns the folder holding
    ``results.json`` on rank 0, ``None`` on the other ranks."""
    trainer = Trainer(cfg)
    eval_dir = None
    try:
        # The lock covers training and the evaluation after it. Freed memory is kept from here:
        # for the repeated work, not for building the run (gpu_env/host_allocator.py).
        with trainer.claim_folder(), freed_memory_kept():
            trainer.run()
            if trainer.ctx.rank == 0:
                eval_dir = evaluate_run(trainer)
    except BaseException as err:
        dist_utils.abort_all(trainer.ctx, str(err))
        raise
    dist_utils.shutdown(trainer.ctx)
    return eval_dir


def evaluate_run(trainer: Trainer) -> Path:
    """The trained agent beside the baselines on the held-out split: the table is printed and
    written to ``<run>/eval``, whose path is returned."""
    cfg = trainer.cfg
    curves = evaluate_agent(trainer.envs.eval_env, trainer.envs.eval_data, trainer.policy,
                            num_clicks=cfg.run.eval_clicks, seed=cfg.run.seed,
                            progress=cfg.run.progress,
                            learned_clicker=cfg.policy.prior_steps > 0)
    meta = {"config": cfg.to_dict(), "checkpoint": str(trainer.keeper.last),
            "training": trainer.last_logged, "mask_prior": trainer.prior_stats,
            "eval_split": cfg.data.eval_split,
            "eval_images": len(trainer.envs.eval_data)}
    eval_dir = trainer.run_dir / "eval"
    text = report(curves, eval_dir, meta, table_clicks=cfg.env.max_clicks)
    if trainer.prior_stats:
        print(f"mask prior (also the learned clicker's network): "
              f"{trainer.prior_stats['prior_steps']} supervised steps on "
              f"{len(trainer.envs.train_data)} {cfg.data.train_split} images in "
              f"{trainer.prior_stats['prior_seconds']:.0f} s\n")
    print(text)
    print(f"\nresults: {eval_dir} (results.json, results.csv, "
          f"dice_vs_clicks.png); checkpoints: {trainer.run_dir}")
    return eval_dir


def main(argv: list[str] | None = None) -> int:
    cfg = parse("train", argv, description=__doc__)
    if cfg is None:  # --print-config: printed, nothing trained
        return 0
    try:
        train_and_evaluate(cfg)
    except USER_ERRORS as err:
        raise fail("train", user_message(err)) from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
