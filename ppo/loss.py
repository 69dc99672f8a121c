"""TorchRL's ClipPPOLoss configured as CleanRL's ppo.py, and the minibatch update around it.

CleanRL's loss, term by term, and where each lives here:

    pg_loss = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))   loss_objective
    v_loss  = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))
    loss    = pg_loss - ent_coef * entropy + vf_coef * v_loss              sum of loss_*

TorchRL's "l2" critic distance is ``(V - R)^2`` without CleanRL's 0.5, so
``critic_coeff = 0.5 * vf_coef``. ``normalize_advantage=True`` standardises the advantage of
the tensordict handed to ``forward``, i.e. per minibatch as in CleanRL, with the unbiased std
clamped at 1e-6 (CleanRL adds 1e-8); it runs on device.

Host synchronisation in ``ClipPPOLoss.forward`` (torchrl 0.14.1), and what is done about it:

1. ``PPOLoss._get_entropy`` checks ``not entropy.isfinite().all()`` (a tensor ``__bool__``)
   to fall back to a Monte-Carlo entropy. Replaced below for ``Categorical`` distributions,
   whose analytic entropy is always finite (logits are clamped at ``finfo.min``).
2. ``PPOLoss.loss_critic`` branches on ``if self.clip_value:``, a tensor buffer on the
   loss's device. Replaced below by a copy that branches on a Python float fixed at
   construction (the clamp itself still uses the buffer).
3. ``Distribution`` argument validation (``if not valid.all()``) would sync when the actor
   builds its distribution: ``GeneratorCategorical`` passes ``validate_args=False``.
4. ``functional=True`` (the default) swaps parameters in and out of the modules every call
   (no sync, but extra work, and incompatible with DDP): ``functional=False`` is used, which
   is fine without target networks.
Everything else in the forward (clipping, ESS, ``kl_approx``, ``clip_fraction``, ratio
statistics, explained variance, mean reductions) is device-side. ``tests/test_ppo_loss.py``
runs a full update with ``.item()``/``.tolist()``/``.cpu()``/``.numpy()``/``__bool__``/
``__int__``/``__float__``/``__index__`` and boolean-tensor indexing made to raise. The one
exemption is ``optimizer.step()``: non-capturable Adam keeps its step counter in a CPU
tensor (even for CUDA parameters) and reads it with ``.item()``, a host read but not a device sync; on CUDA,
``torch.optim.Adam(..., fused=True)`` keeps the counter on the device.

Not ported from CleanRL: early stopping on ``target_kl`` (it reads ``approx_kl`` on the host
every minibatch); ``ppo_update`` returns ``approx_kl`` per minibatch so a caller can apply it
once per update if wanted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributions as D
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import Tensor
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.utils import _clip_value_loss, distance_loss

from ppo.config import PPOConfig
from ppo.policies import LOGITS, TRUNK_VALUE

__all__ = ["PPOConfig", "CleanRLClipPPOLoss", "make_ppo_loss", "ppo_update", "lr_at", "set_lr"]


class CleanRLClipPPOLoss(ClipPPOLoss):
    """``ClipPPOLoss`` minus its two host syncs (see the module docstring)."""

    def __init__(self, *args, clip_value: float | None = None, **kwargs) -> None:
        if isinstance(clip_value, bool):
            raise TypeError("pass clip_value as a float threshold or None")
        super().__init__(*args, clip_value=clip_value, **kwargs)
        self._clip_value_host = None if clip_value is None else float(clip_value)

    def _get_entropy(self, dist: D.Distribution, adv_shape: torch.Size) -> Tensor | TensorDict:
        # Categorical.entropy clamps logits at finfo.min, so it is finite for any mask and the
        # parent's isfinite().all() check (a host sync) can never trigger its fallback.
        if isinstance(dist, D.Categorical):
            return dist.entropy().unsqueeze(-1)
        return super()._get_entropy(dist, adv_shape)

    def loss_critic(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor | None, Tensor | None]:
        # Same computation as PPOLoss.loss_critic, but the clip decision is a Python value.
        if self.separate_losses:
            tensordict = tensordict.detach()
        target_return = tensordict.get(self.tensor_keys.value_target, None)
        if target_return is None:
            raise KeyError(
                f"the value target {self.tensor_keys.value_target!r} is missing; run GAE first"
            )
        old_state_value = None
        if self._clip_value_host is not None:
            old_state_value = tensordict.get(self.tensor_keys.value, None)
            if old_state_value is None:
                raise KeyError(
                    f"value clipping needs the rollout's {self.tensor_keys.value!r} in the batch"
                )
        with (
            self.critic_network_params.to_module(self.critic_network, preserve_module_state=False)
            if self.functional
            else contextlib.nullcontext()
        ):
            state_value = self.critic_network(tensordict).get(self.tensor_keys.value)
        target_return, state_value, old_state_value = self._critic_loss_inputs(
            target_return, state_value, old_state_value
        )
        loss_value = distance_loss(target_return, state_value, loss_function=self.loss_critic_type)
        clip_fraction = None
        if self._clip_value_host is not None:
            loss_value, clip_fraction = _clip_value_loss(
                old_state_value, state_value, self.clip_value, target_return, loss_value,
                self.loss_critic_type,
            )
        explained_variance = None
        if self.log_explained_variance:
            with torch.no_grad():
                tgt, pred = target_return.detach(), state_value.detach()
                resid = torch.var(tgt - pred, correction=0, dim=0)
                total = torch.var(tgt, correction=0, dim=0)
                explained_variance = 1.0 - resid / (total + torch.finfo(tgt.dtype).eps)
        if self._has_critic:
            return self.critic_coeff * loss_value, clip_fraction, explained_variance
        return loss_value, clip_fraction, explained_variance


def make_ppo_loss(
    actor: ProbabilisticActor, critic: TensorDictModule, cfg: PPOConfig
) -> CleanRLClipPPOLoss:
    """ClipPPOLoss with CleanRL's settings (see the module docstring).

    ``actor``/``critic`` are ``make_actor_critic``'s: the critic head reads the trunk value the
    actor wrote, so ``separate_losses`` must stay False (it would detach the critic's input).
    Expects minibatches with ``action``, ``action_log_prob``, ``state_value`` ``[N, 1]``,
    ``advantage`` ``[N, 1]``, ``value_target`` ``[N, 1]`` and the policy's observation keys.
    """
    loss = CleanRLClipPPOLoss(
        actor,
        critic,
        clip_epsilon=cfg.clip_coef,
        clip_value=cfg.clip_coef if cfg.clip_vloss else None,
        entropy_bonus=True,  # logged even when ent_coef == 0
        entropy_coeff=cfg.ent_coef,
        critic_coeff=0.5 * cfg.vf_coef,
        loss_critic_type="l2",
        normalize_advantage=cfg.norm_adv,
        separate_losses=False,
        functional=False,
        reduction="mean",
    )
    # Rollouts have static shapes and every row is a real transition: no validity mask.
    loss.loss_mask_key = None
    return loss


def lr_at(iteration: int, num_iterations: int, lr0: float) -> float:
    """CleanRL's linear annealing, 0-based: ``lr0 * (1 - iteration / num_iterations)``."""
    if not 0 <= iteration < num_iterations:
        raise ValueError(f"iteration={iteration} outside [0, num_iterations={num_iterations})")
    return lr0 * (1.0 - iteration / num_iterations)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's learning rate (host float: no sync; tensor lrs are filled)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _check_batch(loss_module: ClipPPOLoss, batch: TensorDictBase, num_minibatches: int) -> int:
    keys = loss_module.tensor_keys
    n = batch.numel()
    if num_minibatches < 1 or n % num_minibatches:
        raise ValueError(
            f"rollout of {n} transitions does not split into num_minibatches={num_minibatches} "
            "equal minibatches; choose T * B divisible by it"
        )
    for key in (keys.action, keys.sample_log_prob):
        if key not in batch.keys(include_nested=True):
            raise KeyError(f"the batch has no {key!r}; store the actor's outputs in the rollout")
    for key in (keys.advantage, keys.value_target, keys.value):
        if key not in batch.keys(include_nested=True):
            raise KeyError(f"the batch has no {key!r}; compute GAE and store it before ppo_update")
        if batch.get(key).shape != (n, 1):
            raise ValueError(
                f"{key!r} has shape {tuple(batch.get(key).shape)} for {n} transitions; "
                f"TorchRL's loss expects [N, 1] (use .unsqueeze(-1))"
            )
    return n


def ppo_update(
    loss_module: ClipPPOLoss,
    optimizer: torch.optim.Optimizer,
    batch: TensorDictBase,
    cfg: PPOConfig,
    *,
    generator: torch.Generator,
    lr: float | None = None,
    grad_hook: Callable[[], None] | None = None,
) -> TensorDict:
    """``cfg.update_epochs`` shuffled passes of ``cfg.num_minibatches`` clipped-PPO steps.

    Args:
        batch: the rollout, any batch shape (e.g. ``[T, B]``), flattened here to ``[N]``.
        generator: draws the minibatch permutations; on the batch's device.
        lr: if given, set on every param group first (e.g. ``lr_at(it, n_it, cfg.learning_rate)``).
        grad_hook: called after each ``backward`` and before gradient clipping, e.g. an
            all-reduce that averages gradients over ranks (so the clipped norm is the global one).

    Returns:
        Device-side statistics, a TensorDict of scalars with batch size
        ``[update_epochs, num_minibatches]``: every ``loss_*``, ``entropy``, ``kl_approx``
        (TorchRL's ``mean(log pi_old - log pi)``), ``approx_kl`` (CleanRL's
        ``mean(ratio - 1 - log ratio)`` = ``mean_ratio - 1 + kl_approx``), ``clip_fraction``
        (fraction with ``|ratio - 1| > clip_coef``, CleanRL's ``clipfrac``),
        ``value_clip_fraction``, ``explained_variance``, ``ESS``, ``max_ratio``, ``mean_ratio``
        and ``grad_norm`` (before clipping). Nothing is read on the host.
    """
    batch = batch.reshape(-1)
    n = _check_batch(loss_module, batch, cfg.num_minibatches)
    # The trunk's outputs from the rollout must not reach the loss: the critic head has to read
    # the value the actor computes in this forward, not a stale stored one.
    batch = batch.exclude(LOGITS, TRUNK_VALUE)
    if lr is not None:
        set_lr(optimizer, lr)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = batch.get(loss_module.tensor_keys.advantage).device
    stats = []
    for _ in range(cfg.update_epochs):
        order = torch.randperm(n, generator=generator, device=device).view(cfg.num_minibatches, -1)
        for i in range(cfg.num_minibatches):
            out = loss_module(batch[order[i]])
            loss = sum(out.get(k) for k in out.keys() if k.startswith("loss_"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_hook is not None:
                grad_hook()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            step = {k: v.detach().reshape(()) for k, v in out.items()}
            step["approx_kl"] = step["mean_ratio"] - 1.0 + step["kl_approx"]
            step["grad_norm"] = grad_norm.detach()
            stats.append(TensorDict(step, batch_size=[]))
    return torch.stack(stats).view(cfg.update_epochs, cfg.num_minibatches)
