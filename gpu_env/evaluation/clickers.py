"""Reference clickers used as baselines: the RITM oracle, random clicks, and an adapter for
action-space policies (trained agents).

A clicker maps ``(env, state, obs)`` to a click ``(point [B, 2], sam_label [B], cell [B])``
that ``ClickEnv.step_click`` applies. "No further clicks" is not a clicker: the evaluator
simply keeps the mask of the initial user click.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor

from gpu_env import oracle
from gpu_env.obs_spec import ACTION_MASK
from gpu_env.env import ClickEnv
from gpu_env.state_spec import IMAGE_ID, LABELS, MASK, POINTS
from gpu_env import actions
from sam_batch.segmenter import points_from_pixels

Click = tuple[Tensor, Tensor, Tensor]


class Clicker(Protocol):
    name: str

    def __call__(self, env: ClickEnv, state: TensorDict, obs: TensorDict) -> Click:
        ...


def clicked_pixels(env: ClickEnv, state: TensorDict) -> Tensor:
    """``[B, M, M]`` bool map of the low-res pixels holding a click so far."""
    M = env.mask_size
    pix = ((state[POINTS] + 0.5) * (M / env.input_size) - 0.5).round().long().clamp(0, M - 1)
    flat = pix[..., 1] * M + pix[..., 0]  # [B, K]
    valid = state[LABELS] >= 0
    # scatter_add (not scatter_) so an unused slot pointing at pixel 0 cannot erase a real click
    hits = torch.zeros(state.batch_size[0], M * M, dtype=torch.int32, device=env.device)
    hits.scatter_add_(1, flat, valid.int())
    return (hits > 0).view(-1, M, M)


class OracleClicker:
    """RITM's next click on the current error (docs/design.md). ``grid=False`` clicks the exact
    low-res pixel (the reference oracle); ``grid=True`` snaps it to the centre of its grid
    cell, the best an agent limited to the action grid could do by imitation."""

    def __init__(self, grid: bool = False):
        self.grid = grid
        self.name = "oracle (grid)" if grid else "oracle"

    def __call__(self, env: ClickEnv, state: TensorDict, obs: TensorDict) -> Click:
        return ritm_click_towards(env, state, env.gt[state[IMAGE_ID]], self.grid)


def ritm_click_towards(env: ClickEnv, state: TensorDict, target: Tensor, grid: bool = False) -> Click:
    """RITM's next click that moves each row's mask towards ``target [B, M, M]`` bool (the GT for
    the oracle, a network's mask for the learned clicker), never on a clicked pixel; ``grid``
    snaps it to the centre of its action-grid cell."""
    M, G = env.mask_size, env.config.grid_size
    c = oracle.ritm_click(state[MASK], target, ~clicked_pixels(env, state))
    cell = actions.pixel_to_cell(c.rows, c.cols, M, M, G)
    if grid:
        point = actions.cell_point(cell, G, env.input_size)
    else:
        point = points_from_pixels(c.rows, c.cols, M, env.input_size)
    return point, c.positive.long(), cell


class PriorClicker:
    """The supervised *learned clicker*: RITM's rule with the env's mask prior (a network's
    mask of the image alone, ``ClickEnv.set_mask_prior``) in place of the GT. It reads no ground
    truth: the click goes to the centre of the largest disagreement between that prediction
    (upsampled bilinearly to the mask size and thresholded at 0.5) and the current mask, at the
    exact low-res pixel."""

    name = "learned clicker"

    def __call__(self, env: ClickEnv, state: TensorDict, obs: TensorDict) -> Click:
        if env.mask_prior is None:
            raise ValueError("PriorClicker needs a mask prior installed in the env "
                             "(env.set_mask_prior / ppo.prior.attach_prior).")
        M = env.mask_size
        prob = env.mask_prior[state[IMAGE_ID]]
        target = F.interpolate(prob, size=(M, M), mode="bilinear", align_corners=False)[:, 0] > 0.5
        return ritm_click_towards(env, state, target)


class RandomClicker:
    """Uniformly random action among the allowed ones (unclicked cells, either label)."""

    name = "random"

    def __init__(self, seed: int = 0, device: torch.device | str = "cpu"):
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, env: ClickEnv, state: TensorDict, obs: TensorDict) -> Click:
        allowed = obs.get(ACTION_MASK, None)
        if allowed is None:
            allowed = env.action_mask(state)
        noise = torch.rand(allowed.shape, generator=self.generator, device=allowed.device)
        action = torch.where(allowed, noise, -1.0).argmax(dim=1)
        return env.decode_action(action)


class ActionClicker:
    """Adapter for a policy ``obs -> action [B]`` (e.g. a trained PPO agent, greedy)."""

    def __init__(self, name: str, act: Callable[[TensorDict], Tensor]):
        self.name = name
        self.act = act

    def __call__(self, env: ClickEnv, state: TensorDict, obs: TensorDict) -> Click:
        return env.decode_action(self.act(obs))
