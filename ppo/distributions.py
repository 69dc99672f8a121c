"""A categorical over click actions with an optional action mask and an explicit generator.

Why not ``torch.distributions.Categorical`` or TorchRL's ``MaskedCategorical`` as they are:

- both sample with ``torch.multinomial`` on the *global* RNG (tensordict's ``generator=``
  option only forks the global RNG around the call); docs/design.md wants every random draw to come
  from a generator that the caller owns. Here sampling is Gumbel-max on
  ``torch.rand(generator=...)``: exact, sync-free, reproducible from the generator state alone.
- ``MaskedCategorical`` writes ``-inf`` into masked logits: a row whose every action is masked
  then has ``log_prob = -inf`` for every action (the PPO ratio becomes ``exp(-inf + inf) = nan``)
  and ``multinomial`` rejects it. Here masked logits are ``torch.finfo(dtype).min`` (finite,
  so ``0 * logit`` stays 0 in the entropy and its gradient), and a row with no allowed action
  falls back to the unmasked logits (see ``apply_mask``).
- both inherit ``Distribution``'s argument validation, whose ``if not valid.all()`` is a host
  sync; ``validate_args=False`` is passed explicitly here (TorchRL only happens to switch the
  global default off as an import side effect).
"""

from __future__ import annotations

import torch
import torch.distributions as D

__all__ = ["GeneratorCategorical"]


def apply_mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked logits ``[*, A]``: disallowed entries set to the dtype's most negative finite value.

    A row with no allowed action (the env should never produce one, but a bug or an edge case
    such as a grid with every cell clicked must not poison the update with NaN) is treated as
    fully allowed: it samples from, and is scored by, the policy's unmasked logits.
    """
    if mask is None:
        return logits
    if mask.dtype != torch.bool:
        raise TypeError(f"action mask must be bool (True = allowed), got dtype {mask.dtype}")
    if mask.shape != logits.shape:
        raise ValueError(
            f"action mask shape {tuple(mask.shape)} does not match logits {tuple(logits.shape)}"
        )
    # Computed on device: no Python branch on whether such rows exist.
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


class GeneratorCategorical(D.Categorical):
    """Categorical over the last dim of ``logits`` ``[*batch, A]``.

    Args:
        logits: unnormalised log-probabilities ``[*batch, A]`` (float32 recommended).
        mask: optional bool ``[*batch, A]``, True = allowed (the env's ``action_mask``).
        generator: the torch.Generator used by :meth:`sample`, on the logits' device. ``None``
            is accepted only for scoring (``log_prob``/``entropy``, as in the PPO loss);
            sampling without a generator raises instead of touching the global RNG.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        self._generator = generator
        super().__init__(logits=apply_mask(logits, mask), validate_args=False)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """The most likely allowed action ``[*batch]`` (tensordict's DETERMINISTIC interaction)."""
        return self.logits.argmax(dim=-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Gumbel-max draw ``[*sample_shape, *batch]`` (int64) from ``generator``."""
        if self._generator is None:
            raise RuntimeError(
                "GeneratorCategorical.sample needs a torch.Generator: pass generator= when the "
                "distribution is built (make_actor_critic(..., generator=g)); library code does "
                "not draw from the global RNG."
            )
        shape = torch.Size(sample_shape) + self.logits.shape
        with torch.no_grad():
            u = torch.rand(
                shape, generator=self._generator, device=self.logits.device, dtype=torch.float32
            )
            # u in [tiny, 1): -log(u) in (0, 87.4], so the Gumbel noise is finite, within
            # [-4.5, 16.7]; masked logits (finfo.min) can therefore never win the argmax.
            gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))
            return (self.logits.float() + gumbel).argmax(dim=-1)
