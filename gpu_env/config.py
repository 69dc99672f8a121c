"""Constants of a batched click environment (everything that is not per-episode state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

from gpu_env.obs_spec import observation_keys


@dataclass(frozen=True)
class EnvConfig:
    """How episodes are run and what is observed (the env section of a run); the semantics
    each field controls are in docs/design.md. The defaults are the training run's; the
    prototype's bare six-channel env is ``PROTOTYPE_ENV``."""

    grid_size: int = 32
    """Cells per side of the click grid: an action is a cell and a label (foreground or
    background), 2 x grid_size^2 actions in all."""
    # 10, not the prototype's 5: the evaluation's NoC runs 20 clicks, and an agent trained on
    # 5-click episodes never sees the states of its later clicks (docs/results/ablation.md).
    max_clicks: int = 10
    """Agent clicks per episode, after the initial user click; reaching it ends the episode
    (truncation)."""
    obs_size: int = 128
    """Side, in pixels, of the observation's image planes."""
    target_dice: float | None = None
    """End an episode (termination) once its Dice reaches this value, between 0 and 1. Unset:
    episodes run to --max-clicks."""
    boundary_weight: float = 0.5
    """Weight of the boundary term in the reward: reward = Dice gain + weight x boundary-score
    gain."""
    boundary_metric: Literal["fscore", "biou"] = "fscore"
    """Boundary score of the reward: fscore (boundary F-score) or biou (Boundary IoU)."""
    boundary_tolerance: int = 2
    """Width of the boundary band, in pixels of the 256x256 mask."""
    use_mask_input: bool = True
    """Give SAM2 its previous mask (low-resolution logits) with each new click."""
    heatmap_sigma: float = 3.0
    """Spread (Gaussian sigma) of each click's mark in the observation, in observation pixels."""
    mode: Literal["auto", "simulated_user"] = "auto"
    """auto: the agent refines masks without seeing the ground truth; simulated_user: it also
    sees where the mask is wrong, like a user correcting it."""
    obs_sam_prob: bool = True
    """Observe the segmenter's probability map (sam_prob)."""
    obs_image_embedding: bool = False
    """Observe SAM2's cached image embedding (image_embedding); needs --segmenter sam2."""
    # The map comes from a network of the image alone (ppo.prior.MaskPrior, installed with
    # ClickEnv.set_mask_prior): it reads no ground truth of the episode.
    obs_mask_prior: Annotated[bool, tyro.conf.arg(aliases=("--mask-prior",))] = True
    """Observe a mask prior (mask_prior): a small U-Net's guess of the object from the image
    alone, trained on the training split's masks before PPO; the learned-clicker baseline uses
    the same network. The agent still sees no ground truth."""
    # gpu_env.prior_click: RITM's rule as a map over the grid
    obs_prior_click: bool = True
    """Observe, for each grid cell, where RITM's clicker would click if the mask prior were the
    ground truth (prior_click). Needs the mask prior (--no-mask-prior turns both off)."""
    action_mask: bool = True
    """Forbid clicks on cells already clicked; with --mode simulated_user also clicks whose
    label contradicts the ground truth (when no cell is left, every unclicked cell is
    allowed)."""

    @property
    def observation_keys(self) -> tuple[str, ...]:
        """The observation's keys, in order (``gpu_env.obs_spec.OBSERVATION`` declares each)."""
        return observation_keys(self)

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
