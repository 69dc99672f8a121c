"""On-device rollout: a preallocated ``T x B`` TensorDict filled from the raw env path.

Per step: observe, one policy forward (logits, value), a Gumbel-max sample from the run's own
generator, one env step (one segmenter decode for the whole batch), one value forward on the
step's final observation, and a masked reset of finished rows. ``next_value`` is the value of
the final observation for *every* row: for rows that did not finish it equals the next
observation anyway, for truncated rows it is the bootstrap value, and for terminated rows GAE
zeroes it. No value is read on the host.
"""

from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDict
from torch import Tensor

from gpu_env.env import ClickEnv

PolicyFn = Callable[[TensorDict], tuple[Tensor, Tensor]]
"""``obs -> (logits [B, A] with disallowed actions at a large negative value, value [B])``."""


def sample_actions(logits: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Gumbel-max sample from ``logits [B, A]`` with an explicit generator (never the global
    RNG). Returns ``(action [B], log_prob [B])``."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device,
                   dtype=torch.float32).clamp_(min=1e-20, max=1.0 - 1e-7)
    gumbel = -torch.log(-torch.log(u))
    action = (logits.float() + gumbel).argmax(dim=-1)
    log_prob = torch.log_softmax(logits.float(), dim=-1).gather(-1, action[:, None])[:, 0]
    return action, log_prob


def allocate_buffer(env: ClickEnv, obs: TensorDict, num_steps: int) -> TensorDict:
    """The ``[T, B]`` rollout storage, allocated once and overwritten every iteration."""
    B = obs.batch_size[0]
    dev = env.device
    zeros = lambda *s, dtype=torch.float32: torch.zeros(num_steps, B, *s, dtype=dtype, device=dev)
    buf = TensorDict(
        {
            "obs": obs.expand(num_steps, B).clone(),
            "action": zeros(dtype=torch.int64),
            "log_prob": zeros(),
            "value": zeros(),
            "next_value": zeros(),
            "reward": zeros(),
            "terminated": zeros(dtype=torch.bool),
            "done": zeros(dtype=torch.bool),
        },
        batch_size=[num_steps, B],
        device=dev,
    )
    return buf


class EpisodeStats:
    """Device-side accumulators of finished episodes; read on the host only by ``read``."""

    def __init__(self, batch_size: int, device: torch.device):
        self.ep_return = torch.zeros(batch_size, device=device)
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)  # n, return, dice, d0, reward

    def update(self, reward: Tensor, done: Tensor, final_dice: Tensor, initial_dice: Tensor) -> None:
        self.ep_return += reward
        d = done.to(torch.float64)
        self.sums += torch.stack((d.sum(), (self.ep_return.double() * d).sum(),
                                  (final_dice.double() * d).sum(),
                                  (initial_dice.double() * d).sum(), reward.double().sum()))
        self.ep_return = torch.where(done, 0.0, self.ep_return)

    def read(self, steps: int) -> dict[str, float]:
        """Host read (one sync) of the means since the last read; resets the sums."""
        n, ret, dice, d0, rew = self.sums.tolist()
        self.sums.zero_()
        k = max(n, 1.0)
        return {"episodes": n, "episode_return": ret / k, "final_dice": dice / k,
                "initial_dice": d0 / k, "dice_gain": (dice - d0) / k,
                "mean_reward": rew / max(steps, 1)}

    def state_dict(self) -> dict[str, Tensor]:
        return {"ep_return": self.ep_return, "sums": self.sums}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        self.ep_return = d["ep_return"].to(self.ep_return.device)
        self.sums = d["sums"].to(self.sums.device)


@torch.no_grad()
def collect(env: ClickEnv, state: TensorDict, policy: PolicyFn, value_fn: Callable[[TensorDict], Tensor],
            buffer: TensorDict, generator: torch.Generator, stats: EpisodeStats,
            initial_dice: Tensor) -> tuple[TensorDict, Tensor]:
    """Fill ``buffer`` with ``T`` steps of every row. ``initial_dice [B]`` tracks the Dice of
    the initial user click of each row's current episode (for the Dice-gain statistic).
    Returns the env state and ``initial_dice`` to continue from."""
    for t in range(buffer.batch_size[0]):
        obs = env.observe(state)
        logits, value = policy(obs)
        action, log_prob = sample_actions(logits, generator)
        nxt, out = env.step(state, action)
        next_value = value_fn(env.observe(nxt))
        stats.update(out["reward"], out["done"], out["dice"], initial_dice)
        state = env.reset(nxt, out["done"])
        initial_dice = torch.where(out["done"], state["dice"], initial_dice)
        buffer[t] = TensorDict(
            {"obs": obs, "action": action, "log_prob": log_prob, "value": value,
             "next_value": next_value, "reward": out["reward"],
             "terminated": out["terminated"], "done": out["done"]},
            batch_size=buffer.batch_size[1:], device=buffer.device,
        )
    return state, initial_dice
