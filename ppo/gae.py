"""Generalized advantage estimation over a ``[T, B]`` rollout, via TorchRL's functional GAE.

Semantics (docs/design.md episodes): ``terminated`` ends an episode with no future value, so the
TD target is ``r_t``; a truncated step (``done & ~terminated``, i.e. ``max_clicks`` reached)
bootstraps from ``next_value``, the value of the episode's *final* observation that the
rollout keeps before auto-reset; and nothing propagates backwards across ``done``, so the
advantage of the last step of an episode never sees the next episode's deltas:

    delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   A_T = 0
    value_target_t = A_t + V(s_t)

Which TorchRL function and why: ``generalized_advantage_estimate`` implements exactly the
recursion above (``terminated`` gates the bootstrap, ``done`` gates the propagation), as a
Python loop over T with one fused update per step and no host synchronisation (only shape
checks). ``vec_generalized_advantage_estimate`` is avoided: for scalar gamma/lambda it splits
the batch into trajectories with ``torch.where(done)`` and pads to ``torch.max(splits)``
(data-dependent shapes, i.e. host syncs) and selects with a boolean mask; with tensor
gamma/lambda it calls ``.any()``/``.item()``. T is the number of env steps per rollout
(a handful of clicks), so the loop costs T small kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchrl.objectives.value.functional import generalized_advantage_estimate

__all__ = ["compute_gae"]


def compute_gae(
    reward: Tensor,
    value: Tensor,
    next_value: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lam) for a time-major rollout.

    Args:
        reward: ``[T, B]`` float, r_t for the transition s_t -> s_{t+1}.
        value: ``[T, B]`` V(s_t) as recorded during the rollout.
        next_value: ``[T, B]`` V(s_{t+1}); for a finished episode, the value of its final
            observation (not of the reset observation that replaced it).
        terminated: ``[T, B]`` bool, the episode ended with no future reward.
        done: ``[T, B]`` bool, the episode ended (terminated or truncated). ``terminated``
            is or-ed in, so a terminated step always stops propagation.
        gamma, lam: discount and GAE lambda, Python floats in [0, 1].

    Returns:
        ``(advantage, value_target)``, both ``[T, B]`` in ``value``'s dtype, no grad.
    """
    shapes = {name: tuple(t.shape) for name, t in
              dict(reward=reward, value=value, next_value=next_value,
                   terminated=terminated, done=done).items()}
    if reward.ndim != 2 or len(set(shapes.values())) != 1:
        raise ValueError(f"compute_gae expects five [T, B] tensors of one shape, got {shapes}")
    if terminated.dtype != torch.bool or done.dtype != torch.bool:
        raise TypeError(
            f"terminated/done must be bool, got {terminated.dtype}/{done.dtype}; "
            "convert with .bool() (True = the episode ended at this step)"
        )
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")

    def btf(x: Tensor) -> Tensor:  # [T, B] -> TorchRL's [B, T, 1] (time at dim -2)
        return x.transpose(0, 1).unsqueeze(-1)

    with torch.no_grad():
        advantage, value_target = generalized_advantage_estimate(
            gamma,
            lam,
            state_value=btf(value),
            next_state_value=btf(next_value.to(value.dtype)),
            reward=btf(reward.to(value.dtype)),
            done=btf(done | terminated),
            terminated=btf(terminated),
        )
    return (
        advantage.squeeze(-1).transpose(0, 1).contiguous(),
        value_target.squeeze(-1).transpose(0, 1).contiguous(),
    )
