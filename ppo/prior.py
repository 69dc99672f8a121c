"""The mask prior: a small U-Net that segments the image alone, trained on the training split.

In automatic mode the actor never sees ground truth, so where a click should go has to be
inferred from the image. The mask prior learns that from the training split's GT masks (a
supervised loss: ground truth shapes training, never the actor's input) and, once trained, its
probability map of each image is computed once and handed to the env, which adds it to the
observation under ``mask_prior`` (like the segmenter's features, it depends on the image only).

It serves twice:

* as an input of the agent (``SpatialPolicy(use_mask_prior=True)``), from which the policy also
  derives predicted false-negative / false-positive maps against its current mask;
* as the network of the supervised *learned clicker* baseline
  (``gpu_env.evaluation.clickers.PriorClicker``: RITM's rule with the prior's mask in place of
  the GT).

The network is owned by the policy (``SpatialPolicy.prior``), so checkpoints carry it, and its
parameters are frozen after pre-training (PPO never changes them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gpu_env.mask_prior import MaskPrior, prior_probabilities

__all__ = ["MaskPrior", "PriorTrainStats", "prior_probabilities", "train_mask_prior"]


@dataclass
class PriorTrainStats:
    steps: int
    seconds: float
    final_loss: float


def _augment(x: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same random flip / 90-degree rotation of a whole minibatch of images and masks."""
    k = int(torch.randint(4, (1,), generator=gen))
    flip = bool(torch.randint(2, (1,), generator=gen))
    if flip:
        x, y = x.flip(-1), y.flip(-1)
    return torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))


def train_mask_prior(prior: MaskPrior, rgb_uint8: Tensor, gt: Tensor, *, steps: int,
                     batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                     progress: bool = True) -> PriorTrainStats:
    """Supervised training of ``prior`` on ``rgb_uint8 [N, 3, S, S]`` and ``gt [N, M, M]`` bool
    (area-resized to ``S``): ``steps`` AdamW updates of BCE + soft-Dice on random minibatches with
    random flips / 90-degree rotations, a one-cycle (cosine) learning-rate schedule. Draws use a
    private generator seeded by ``seed`` (the global RNG is not touched)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = rgb_uint8.device
    S = rgb_uint8.shape[-1]
    target = F.interpolate(gt[:, None].float(), size=(S, S), mode="area")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    prior.train()
    n = rgb_uint8.shape[0]
    t0 = time.perf_counter()
    loss = torch.zeros(())
    for _ in tqdm(range(steps), desc="mask prior", disable=not progress, leave=False):
        idx = torch.randint(n, (min(batch_size, n),), generator=gen).to(device)
        x, y = _augment(rgb_uint8[idx].float() / 255.0, target[idx], gen)
        logits = prior(x)
        p = torch.sigmoid(logits)
        inter = (p * y).sum(dim=(1, 2, 3))
        soft_dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + y.sum(dim=(1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + soft_dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return PriorTrainStats(steps=steps, seconds=time.perf_counter() - t0, final_loss=float(loss.detach()))


def policy_prior(policy: nn.Module) -> MaskPrior | None:
    """The ``MaskPrior`` a policy owns (``SpatialPolicy(use_mask_prior=True)``), else None."""
    prior = getattr(policy, "prior", None)
    return prior if isinstance(prior, MaskPrior) else None


def attach_prior(policy: nn.Module, *envs) -> None:
    """Compute the policy's prior map of every image of each env (``ClickEnv``; None skipped;
    envs sharing one image tensor computed once) and install it (``env.set_mask_prior``). A
    no-op for a policy without a prior."""
    prior = policy_prior(policy)
    if prior is None:
        return
    maps: dict[int, Tensor] = {}  # views of one env (a compiled copy) share its images
    for env in envs:
        if env is not None:
            key = id(env.rgb)
            if key not in maps:
                maps[key] = prior_probabilities(prior, env.rgb)
            env.set_mask_prior(maps[key])


def pretrain_prior(policy: nn.Module, env, *, steps: int, seed: int, progress: bool = True
                   ) -> PriorTrainStats | None:
    """Train the policy's prior on ``env``'s images and GT masks (its training split), then
    freeze it again. Returns None for a policy without a prior or ``steps == 0``."""
    prior = policy_prior(policy)
    if prior is None or steps == 0:
        return None
    prior.requires_grad_(True)
    try:
        stats = train_mask_prior(prior, env.rgb, env.gt, steps=steps, seed=seed, progress=progress)
    finally:
        prior.requires_grad_(False)
    return stats
