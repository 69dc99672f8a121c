"""The trained agent's part of evaluation: its greedy actor (the policy network, ``apply_mask``),
the agent evaluated alone (training's quick evaluation) or beside the baselines, and the results
table. Everything else of evaluation (clickers, curves, tables, figures, seeds) lives in
``gpu_env/evaluation/``."""

from __future__ import annotations

from pathlib import Path

import torch
from tensordict import TensorDict

from gpu_env.obs_spec import ACTION_MASK
from gpu_env.datasets.base import SegDataset
from gpu_env.env import ClickEnv
from gpu_env.evaluation import (ActionClicker, Curves, OracleClicker, PriorClicker, RandomClicker,
                                evaluate_clicker, format_table, write_results)
from ppo.distributions import apply_mask


def greedy_actor(policy: torch.nn.Module):
    """``obs -> argmax action`` of a policy (``ProtoCNN``/``SpatialPolicy``), honouring the
    observation's ``action_mask`` the way training's distribution does."""

    @torch.no_grad()
    def act(obs: TensorDict) -> torch.Tensor:
        logits, _ = policy(**{k: obs[k] for k in policy.in_keys})
        return apply_mask(logits, obs.get(ACTION_MASK, None)).argmax(dim=-1)

    return act


def agent_curves(env: ClickEnv, dataset: SegDataset, policy: torch.nn.Module, *,
                 name: str = "agent (PPO)", **kw) -> Curves:
    """The greedy ``policy`` on every image of ``dataset`` in order (``kw``: those of
    ``evaluate_clicker``); the policy is left in the train/eval mode it was in."""
    ids = torch.arange(len(dataset), device=env.device)
    was_training = policy.training
    policy.eval()
    try:
        return evaluate_clicker(env, dataset, ActionClicker(name, greedy_actor(policy)), ids, **kw)
    finally:
        policy.train(was_training)


def evaluate_agent(env: ClickEnv, dataset: SegDataset, policy: torch.nn.Module | None, *,
                   num_clicks: int = 20, batch_size: int = 64, seed: int = 0,
                   baselines: bool = True, record: int = 0, progress: bool = True,
                   agent_name: str = "agent (PPO)", learned_clicker: bool = True) -> list[Curves]:
    """Curves for the agent (if given) and the baselines: RITM oracle (pixel-exact and snapped
    to the grid), the learned clicker (when the env has a mask prior installed and
    ``learned_clicker``: False when that prior was never trained, ``--prior-steps 0``), no
    further clicks, random clicks, on every image of ``dataset`` in order."""
    ids = torch.arange(len(dataset), device=env.device)
    run = lambda clicker, name=None: evaluate_clicker(
        env, dataset, clicker, ids, num_clicks=num_clicks, batch_size=batch_size,
        record=record, progress=progress, name=name)
    curves = []
    if policy is not None:
        curves.append(agent_curves(env, dataset, policy, name=agent_name, num_clicks=num_clicks,
                                   batch_size=batch_size, record=record, progress=progress))
    if baselines:
        curves.append(run(OracleClicker(grid=False)))
        curves.append(run(OracleClicker(grid=True)))
        if env.mask_prior is not None and learned_clicker:
            curves.append(run(PriorClicker()))
        curves.append(run(None))
        curves.append(run(RandomClicker(seed=seed, device=env.device)))
    return curves


def report(curves: list[Curves], out_dir: str | Path | None, meta: dict | None = None,
           table_clicks: int = 5) -> str:
    """Print-ready tables (low-res and original-resolution Dice); writes CSV/JSON/plot if
    ``out_dir`` is given."""
    summaries = [c.summary(table_clicks) for c in curves]
    text = "\n\n".join([
        format_table(summaries, "dice", "Dice after k clicks (256x256 working resolution), "
                                        "mean ± std; NoC on original-resolution IoU"),
        format_table(summaries, "dice_orig", "Dice after k clicks at original resolution"),
    ])
    if out_dir is not None:
        write_results(summaries, out_dir, meta)
    return text
