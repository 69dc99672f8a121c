"""Behaviour-cloning warm start: imitate the RITM oracle's grid clicks before PPO.

The teacher is ``OracleClicker(grid=True)`` (the oracle's click snapped to its grid cell), which
reads the ground truth; the student is the policy, which sees only its observation. In
simulated-user mode that observation holds the GT error maps, so the oracle is learnable
exactly (up to the half-resolution teacher, see ``oracle_actions``); in
automatic-refinement mode the student must predict the oracle's click from the
image and the current mask alone, which uses the training labels the reward already needs
and puts no ground truth into the observation. Episodes follow the teacher's clicks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict

from gpu_env import oracle
from gpu_env.datasets.io import resize_masks
from gpu_env import actions
from gpu_env.env import ClickEnv
from gpu_env.state_spec import CLICKED, IMAGE_ID, MASK
from gpu_env.evaluation import OracleClicker


def oracle_actions(env: ClickEnv, state: TensorDict, obs: TensorDict,
                   teacher_size: int | None = None) -> torch.Tensor:
    """The teacher's action ``[B]`` in the docs/design.md coding (label 0 = fg).

    ``teacher_size`` (e.g. 128) runs RITM's rule on area-downsampled masks: the exact distance
    transform costs O(H W^2), so half resolution is 8x cheaper on CPU, and the click is only
    needed at grid-cell precision. ``None``: the exact oracle at the mask resolution."""
    if teacher_size is None or teacher_size == env.mask_size:
        _, sam_label, cell = OracleClicker(grid=True)(env, state, obs)
    else:
        S, G = teacher_size, env.config.grid_size
        gt = resize_masks(env.gt[state[IMAGE_ID]], S)
        pred = resize_masks(state[MASK], S)
        free = ~F.interpolate(state[CLICKED].view(-1, 1, G, G).float(), size=(S, S),
                              mode="nearest")[:, 0].bool()
        click = oracle.ritm_click(pred, gt, free)
        cell = actions.pixel_to_cell(click.rows, click.cols, S, S, G)
        sam_label = click.positive.long()
    return actions.encode(sam_label, cell, env.config.grid_size)


def behaviour_cloning(env: ClickEnv, policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      steps: int, batch_size: int, seed: int, max_grad_norm: float = 0.5,
                      teacher_size: int | None = 128, progress=None) -> list[torch.Tensor]:
    """``steps`` cross-entropy updates of ``policy`` towards the oracle's actions on ``batch_size``
    episodes that follow the oracle. Returns the per-step losses (device tensors)."""
    state = env.initial_state(batch_size, seed)
    losses = []
    for _ in range(steps):
        obs = env.observe(state)
        target = oracle_actions(env, state, obs, teacher_size)
        logits, _ = policy(**{k: obs[k] for k in policy.in_keys})
        # Unmasked logits: the teacher may pick an unclicked pixel inside a clicked cell.
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        optimizer.step()
        losses.append(loss.detach())
        state, _, _ = env.step_autoreset(state, target)
        if progress is not None:
            progress()
    return losses
