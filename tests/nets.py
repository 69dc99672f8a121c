"""Policies built from the old per-input keywords, for tests that vary one input at a time.

The networks take an env config and a policy config (their defaults are the training run's);
these helpers translate ``use_sam_prob=True``-style keywords into those configs, starting from
the prototype's bare six planes.
"""

from __future__ import annotations

from dataclasses import replace

from gpu_env.config import PROTOTYPE_ENV
from ppo.config import PolicyConfig
from ppo.policies import ProtoCNN, SpatialPolicy


def env_with(grid_size: int = 32, obs_size: int = 128, use_sam_prob: bool = False,
             use_gt_error: bool = False, use_image_embedding: bool = False,
             use_mask_prior: bool = False, use_prior_click: bool = False):
    return replace(PROTOTYPE_ENV, grid_size=grid_size, obs_size=obs_size, obs_sam_prob=use_sam_prob,
                   mode="simulated_user" if use_gt_error else "auto",
                   obs_image_embedding=use_image_embedding,
                   obs_mask_prior=use_mask_prior or use_prior_click, obs_prior_click=use_prior_click)


def spatial(grid_size: int = 32, obs_size: int = 128, width: int = 32, patch_stem: bool = False,
            prior_width: int = 16, prior_distance: bool = False, prior_click_scale: float = 0.0,
            **keys_and_net) -> SpatialPolicy:
    """A ``SpatialPolicy`` over the prototype's planes plus the ``use_*`` inputs asked for
    (``dilations`` etc. pass through)."""
    env_keys = {k: keys_and_net.pop(k) for k in list(keys_and_net) if k.startswith("use_")}
    policy = replace(PolicyConfig(), width=width, patch_stem=patch_stem, prior_width=prior_width,
                     prior_distance=prior_distance, prior_click_scale=prior_click_scale)
    return SpatialPolicy(env_with(grid_size, obs_size, **env_keys), policy, **keys_and_net)


def proto(obs_size: int = 128, grid_size: int = 32, use_gt_error: bool = False) -> ProtoCNN:
    return ProtoCNN(env_with(grid_size, obs_size, use_gt_error=use_gt_error))
