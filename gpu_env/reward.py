"""Per-step reward and the boundary term it uses.

``r_t = (Dice_t - Dice_{t-1}) + lambda * (B_t - B_{t-1})`` where ``B`` is the boundary
F-score (default; tolerance 2 px, Euclidean) or Boundary IoU of the binary low-res mask against
the low-res GT, computed with Kornia morphology on accelerators and with the equivalent
separable byte decomposition on CPU (``gpu_env.metrics``; identical results, parity-tested).
A telescoping sum: the episode
return is the total improvement from the initial user click's mask to the last mask.
"""

from __future__ import annotations

from torch import Tensor

from gpu_env import metrics
from gpu_env.config import EnvConfig


def boundary_gt_terms(gt: Tensor, config: EnvConfig) -> tuple[Tensor, ...]:
    """The GT-only part of the configured boundary metric (computed once per image)."""
    engine = metrics.default_engine(gt.device)
    if config.boundary_metric == "fscore":
        return metrics.fscore_gt_terms(gt, config.boundary_tolerance, engine)
    return (metrics.boundary(gt, config.boundary_tolerance, engine),)


def boundary_score(pred: Tensor, gt: Tensor, config: EnvConfig,
                   gt_terms: tuple[Tensor, ...] | None = None) -> Tensor:
    """The configured boundary metric of ``pred`` vs ``gt`` (``[B, M, M]`` bool) -> ``[B]``;
    ``gt_terms`` from ``boundary_gt_terms`` (same rows) skips the GT morphology."""
    engine = metrics.default_engine(gt.device)
    if config.boundary_metric == "fscore":
        return metrics.boundary_fscore(pred, gt, config.boundary_tolerance, engine, gt_terms)
    return metrics.boundary_iou(pred, gt, config.boundary_tolerance, engine,
                                None if gt_terms is None else gt_terms[0])


def step_reward(dice_new: Tensor, dice_old: Tensor, boundary_new: Tensor, boundary_old: Tensor,
                weight: float) -> Tensor:
    """``[B]`` reward: Dice change plus ``weight`` times boundary-metric change."""
    return (dice_new - dice_old) + weight * (boundary_new - boundary_old)
