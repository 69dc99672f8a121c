"""Constants of a batched click environment (everything that is not per-episode state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Observation / state keys, shared by the env, the TorchRL wrapper and the policies.
OBS = "observation"  # [B, 6, S, S] float: RGB in [0,1], binary mask, fg heatmap, bg heatmap
SAM_PROB = "sam_prob"  # [B, 1, S, S] float: sigmoid of the segmenter's logits (optional)
IMAGE_EMBEDDING = "image_embedding"  # [B, C, h, w]: cached SAM2 image embedding (optional)
MASK_PRIOR = "mask_prior"  # [B, 1, S, S] float: a learned image-only mask probability (optional)
GT_ERROR = "gt_error"  # [B, 2, S, S] float: false-negative, false-positive maps (simulated user)
ACTION_MASK = "action_mask"  # [B, 2 * grid**2] bool: True = action allowed (optional)


@dataclass(frozen=True)
class EnvConfig:
    """How episodes are run; see DESIGN.md for the semantics each field controls."""

    grid_size: int = 32
    """Click grid side: actions are ``label * grid**2 + row * grid + col``."""
    max_clicks: int = 5
    """Agent clicks per episode (after the initial user click); reaching it truncates."""
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
    obs_sam_prob: bool = False
    """Add the ``sam_prob`` key to observations."""
    obs_image_embedding: bool = False
    """Add the cached SAM2 image embedding under ``image_embedding`` (SAM2 segmenter only)."""
    obs_mask_prior: bool = False
    """Add the ``mask_prior`` key: a per-image mask probability map installed with
    ``ClickEnv.set_mask_prior`` (a network of the image alone, e.g. ``ppo.prior.MaskPrior``;
    no ground truth of the episode)."""
    action_mask: bool = False
    """Provide ``action_mask``: no click on an already clicked cell; in simulated-user mode
    also only label-consistent clicks (fg inside the false-negative region, bg inside the
    false-positive region; if a row has no such cell, every unclicked cell is allowed)."""

    @property
    def num_actions(self) -> int:
        return 2 * self.grid_size * self.grid_size

    @property
    def max_points(self) -> int:
        """Click-buffer length K_max: the initial user click plus ``max_clicks``."""
        return self.max_clicks + 1
