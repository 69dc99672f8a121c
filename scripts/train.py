"""Train a click agent with PPO, then evaluate it beside the baselines and print the table.

    python -m scripts.train                      # embedded default: synthetic + weight-free, CPU
    python -m scripts.train --help               # every TrainConfig field
    torchrun --nproc_per_node=N -m scripts.train --device cuda ...   # N GPUs
"""

from __future__ import annotations

import json
import sys

import tyro

from ppo import distributed as dist_utils
from ppo.config import TrainConfig
from ppo.evaluate import evaluate_agent, report
from ppo.train import Trainer


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(TrainConfig, args=argv, description=__doc__)
    trainer = Trainer(cfg)
    try:
        trainer.run()
    except BaseException as err:
        dist_utils.abort_all(trainer.ctx, str(err))
        raise
    if trainer.ctx.rank == 0:
        curves = evaluate_agent(trainer.envs.eval_env, trainer.envs.eval_data, trainer.policy,
                                num_clicks=cfg.eval_clicks, seed=cfg.seed, progress=cfg.progress)
        meta = {"config": cfg.to_dict(), "checkpoint": str(trainer.keeper.last),
                "training": trainer.last_logged, "eval_split": cfg.eval_split,
                "eval_images": len(trainer.envs.eval_data)}
        text = report(curves, trainer.run_dir / "eval", meta, table_clicks=cfg.max_clicks)
        print(text)
        print(f"\nresults: {trainer.run_dir / 'eval'} (results.json, results.csv, "
              f"dice_vs_clicks.png); checkpoints: {trainer.run_dir}")
    dist_utils.shutdown(trainer.ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
