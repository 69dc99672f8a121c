"""Slow reference of the env's reset (ClickEnv.reset gathers precomputed constants)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor

from gpu_env import observation as O
from gpu_env.env import ClickEnv


def reset_reference(env: ClickEnv, state: TensorDict, rows: Tensor,
                    image_ids: Tensor | None = None) -> TensorDict:
    """``reset`` computed from the episode's definition (first click added to empty
    heatmaps, mask thresholded from the logits): the slow reference ``reset`` is tested
    against, bitwise."""
    key, image_ids = env._draw(state, image_ids)
    B, K = state["labels"].shape
    S = env.config.obs_size
    first_label = torch.ones(B, dtype=torch.int64, device=env.device)
    slot0 = torch.arange(K, device=env.device) == 0
    points = torch.where(slot0[None, :, None], env.first_point[image_ids][:, None], 0.0)
    labels = torch.where(slot0[None], first_label[:, None], -1)
    logits = env.init_logits[image_ids]
    heat = O.add_click(
        torch.zeros(B, 2, S, S, device=env.device), points[:, 0], first_label,
        torch.ones(B, dtype=torch.bool, device=env.device), env.input_size,
        env.config.heatmap_sigma,
    )
    clicked = F.one_hot(env.first_cell[image_ids], env.config.grid_size ** 2).bool()
    fresh = TensorDict(
        {
            "image_id": image_ids,
            "key": key,
            "points": points,
            "labels": labels,
            "num_clicks": torch.ones(B, dtype=torch.int64, device=env.device),
            "step": torch.zeros(B, dtype=torch.int64, device=env.device),
            "logits": logits,
            "mask": logits[:, 0] > 0,
            "dice": env.init_dice[image_ids],
            "boundary": env.init_boundary[image_ids],
            "heat": heat,
            "clicked": clicked,
            "episode": state["episode"] + 1,
        },
        batch_size=state.batch_size,
        device=env.device,
    )
    return fresh.where(rows, state)
