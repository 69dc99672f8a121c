"""Constants of a batched click environment (everything that is not per-episode state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

# Observation / state keys, shared by the env, the TorchRL wrapper and the policies.
OBS = "observation"  # [B, 6, S, S] float: RGB in [0,1], binary mask, fg heatmap, bg heatmap
SAM_PROB = "sam_prob"  # [B, 1, S, S] float: sigmoid of the segmenter's logits (optional)
IMAGE_EMBEDDING = "image_embedding"  # [B, C, h, w]: cached SAM2 image embedding (optional)
MASK_PRIOR = "mask_prior"  # [B, 1, S, S] float: a learned image-only mask probability (optional)
PRIOR_CLICK = "prior_click"  # [B, 2, G, G] float: RITM's click distance on the mask prior (optional)
GT_ERROR = "gt_error"  # [B, 2, S, S] float: false-negative, false-positive maps (simulated user)
ACTION_MASK = "action_mask"  # [B, 2 * grid**2] bool: True = action allowed (optional)

WITHOUT_FLAGS = {SAM_PROB: "--no-obs-sam-prob", IMAGE_EMBEDDING: "--no-obs-image-embedding",
                 MASK_PRIOR: "--no-mask-prior", PRIOR_CLICK: "--no-obs-prior-click",
                 GT_ERROR: "--mode auto", ACTION_MASK: "--no-action-mask"}
"""The flag that removes each optional observation key (for messages that refuse a key)."""


def flag_without(key: str) -> str:
    """The training flag that removes the optional observation key ``key``."""
    return WITHOUT_FLAGS[key]


@dataclass(frozen=True)
class EnvConfig:
    """How episodes are run and what is observed (the env section of a run); the semantics
    each field controls are in docs/design.md. The defaults are the training run's; the
    prototype's bare six-channel env is ``PROTOTYPE_ENV``."""

    grid_size: int = 32
    """Click grid side: actions are ``label * grid**2 + row * grid + col``."""
    max_clicks: int = 10
    """Agent clicks per episode (after the initial user click); reaching it truncates. The
    training default is 10, not the prototype's 5: the evaluation's NoC runs 20 clicks, and an
    agent trained on 5-click episodes has never seen the states of its later clicks (measured:
    NoC@85 -4.72 -> -5.06 clicks on seed 1, docs/results/ablation.md)."""
    obs_size: int = 128
    """Side of the observation planes."""
    target_dice: float | None = None
    """Terminate an episode once its Dice reaches this value (None: never terminate)."""
    boundary_weight: float = 0.5
    """lambda in r_t = dDice_t + lambda * dBoundary_t."""
    boundary_metric: Literal["fscore", "biou"] = "fscore"
    """Boundary term: boundary F-score or Boundary IoU (both Kornia morphology on device)."""
    boundary_tolerance: int = 2
    """Boundary band / match tolerance in low-res pixels."""
    use_mask_input: bool = True
    """Feed the previous low-res logits back as SAM2's ``mask_input``."""
    heatmap_sigma: float = 3.0
    """Gaussian sigma of click heatmaps, in observation pixels."""
    mode: Literal["auto", "simulated_user"] = "auto"
    """``auto``: the policy sees no ground truth; ``simulated_user``: GT error maps are observed."""
    obs_sam_prob: bool = True
    """Add the ``sam_prob`` key to observations: the segmenter's probability map."""
    obs_image_embedding: bool = False
    """Add the cached SAM2 image embedding under ``image_embedding`` (SAM2 segmenter only)."""
    obs_mask_prior: Annotated[bool, tyro.conf.arg(aliases=("--mask-prior",))] = True
    """Add the ``mask_prior`` key: a per-image mask probability map installed with
    ``ClickEnv.set_mask_prior`` (a network of the image alone, e.g. ``ppo.prior.MaskPrior``;
    no ground truth of the episode). Training pre-trains that network (a small U-Net supervised
    by the training split's GT masks) before PPO; the same network drives the "learned clicker"
    baseline. The actor still sees no ground truth."""
    obs_prior_click: bool = True
    """Add the ``prior_click`` key: per action cell, RITM's click signal with the mask prior in
    place of the GT (``gpu_env.prior_click``; the learned clicker's rule as a map over the
    grid). Observed only with ``obs_mask_prior`` (``--no-mask-prior`` turns both off); reads no
    ground truth."""
    action_mask: bool = True
    """Provide ``action_mask``: no click on an already clicked cell; in simulated-user mode
    also only label-consistent clicks (fg inside the false-negative region, bg inside the
    false-positive region; if a row has no such cell, every unclicked cell is allowed)."""

    @property
    def observation_keys(self) -> tuple[str, ...]:
        """The observation's keys, in order: the one definition that ``ClickEnv.observe``, the
        TorchRL specs (``gpu_env.torchrl_env``) and the policy's inputs
        (``ppo.policies.build_policy``) follow."""
        optional = ((SAM_PROB, self.obs_sam_prob), (IMAGE_EMBEDDING, self.obs_image_embedding),
                    (MASK_PRIOR, self.obs_mask_prior), (PRIOR_CLICK, self.obs_prior_click and self.obs_mask_prior),
                    (GT_ERROR, self.mode == "simulated_user"), (ACTION_MASK, self.action_mask))
        return (OBS, *(key for key, on in optional if on))

    @property
    def num_actions(self) -> int:
        return 2 * self.grid_size * self.grid_size

    @property
    def max_points(self) -> int:
        """Click-buffer length K_max: the initial user click plus ``max_clicks``."""
        return self.max_clicks + 1


PROTOTYPE_ENV = EnvConfig(max_clicks=5, obs_sam_prob=False, obs_mask_prior=False,
                          obs_prior_click=False, action_mask=False)
"""The prototype-compatible env: 5-click episodes, the six observation planes only, no action
mask."""
