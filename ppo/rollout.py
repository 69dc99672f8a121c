"""On-device rollout: a preallocated ``T x B`` TensorDict filled from the raw env path.

Per step: observe, one actor-critic forward (logits, value; TorchRL ``ProbabilisticActor``
sampling with the run's own generator), one env step (one segmenter decode for the whole batch),
and, where episodes may end, one value forward on the step's final observation and a masked
reset of finished rows. ``next_value`` is the value of the final observation for *every* row:
for rows that did not finish it equals the next observation's value, for truncated rows it is
the bootstrap value, and for terminated rows GAE zeroes it. No value is read on the host
inside the loop (``shared_phase`` reads the step counters once, before it).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor

from gpu_env.env import ClickEnv
from gpu_env.state_spec import DICE, STEP
from ppo.policies import LOGITS, STATE_VALUE, TRUNK_VALUE, ActorCritic

ACTION = "action"


def allocate_buffer(example: TensorDict, num_steps: int) -> TensorDict:
    """The ``[T, B]`` rollout storage, shaped like ``example`` (one actor output plus the env's
    reward/terminated/done/next_value), allocated once and overwritten every iteration."""
    B = example.batch_size[0]
    keys = [k for k in example.keys() if k not in (LOGITS, TRUNK_VALUE)]
    buf = example.select(*keys).unsqueeze(0).expand(num_steps, B).clone()
    dev = example.device
    zeros = lambda dtype=torch.float32: torch.zeros(num_steps, B, dtype=dtype, device=dev)
    buf.update({"next_value": zeros(), "reward": zeros(), "terminated": zeros(torch.bool),
                "done": zeros(torch.bool)})
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


def shared_phase(env: ClickEnv, state: TensorDict) -> int | None:
    """Every row's step counter when all rows share it and no episode can end before
    ``max_clicks`` (no ``target_dice``), else ``None``. Then episodes end in lockstep at steps
    the host can predict, which lets ``collect`` skip the bootstrap forward and the reset
    everywhere else. One host read; call it outside the rollout loop."""
    if env.config.target_dice is not None:
        return None
    lo, hi = torch.aminmax(state[STEP])
    lo, hi = (int(v) for v in torch.stack((lo, hi)).tolist())
    return lo if lo == hi else None


@torch.no_grad()
def collect(env: ClickEnv, state: TensorDict, ac: ActorCritic, buffer: TensorDict,
            stats: EpisodeStats, initial_dice: Tensor, phase: int | None = None
            ) -> tuple[TensorDict, Tensor]:
    """Fill ``buffer`` (``[T, B]``) with ``T`` steps of every row. The actor samples with the
    generator it was built with. ``initial_dice [B]`` is the Dice of the initial user click of
    each row's current episode (for the Dice-gain statistic). Returns the env state and
    ``initial_dice`` to continue from.

    ``phase``: ``shared_phase(env, state)``. When it is an int, the rows' episodes end together
    at the steps where the shared counter reaches ``max_clicks``; only there (and at the last
    step) does the rollout run the extra value forward on the final observation and the reset.
    At every other step no row is done, the reset would return the state unchanged, and
    ``next_value`` is the value the next step's forward computes on the same observation:
    one network forward and one observation per step instead of two, with the same buffer
    bitwise (tested against ``phase=None``, the general path, which does both every step).
    """
    keys = [k for k in buffer.keys() if k not in ("advantage", "value_target")]
    storage = buffer.select(*keys)  # shares the buffer's tensors
    T, max_clicks = buffer.batch_size[0], env.config.max_clicks
    obs = env.observe(state)
    for t in range(T):
        td = ac.policy_value(obs)
        if t > 0 and not bootstrapped:  # the previous step's next_value is this forward's value
            storage["next_value"][t - 1] = td[STATE_VALUE][:, 0]
        nxt, out = env.step(state, td[ACTION])
        ends = phase is None or (phase + t + 1) % max_clicks == 0  # host ints: no sync
        bootstrapped = ends or t == T - 1
        if bootstrapped:
            final_obs = env.observe(nxt)
            td["next_value"] = ac.value(final_obs)[STATE_VALUE][:, 0]
        stats.update(out["reward"], out["done"], out["dice"], initial_dice)
        if ends:
            state = env.reset(nxt, out["done"])
            initial_dice = torch.where(out["done"], state[DICE], initial_dice)
            obs = env.observe(state) if t < T - 1 else None
        else:  # no row is done: reset would return ``nxt`` bitwise unchanged
            state = nxt
            obs = final_obs if bootstrapped else env.observe(state)
        td.update({"reward": out["reward"], "terminated": out["terminated"],
                   "done": out["done"]})
        storage[t] = td.select(*(k for k in keys if k != "next_value" or bootstrapped))
    return state, initial_dice
