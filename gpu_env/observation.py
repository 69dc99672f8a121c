"""Observation planes: click heatmaps and the prototype's six channels.

Heatmaps are Gaussians of sigma ``heatmap_sigma`` observation pixels centred on each click,
combined by a per-pixel max per label. The env keeps them in its state and adds one click per
step (``add_click``), an O(S^2) update instead of rebuilding every click each step;
``heatmaps_from_clicks`` rebuilds them from the click buffer and is the reference the
incremental path is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _axis_profile(coord: Tensor, input_size: int, size: int, sigma: float) -> Tensor:
    """``exp(-(u - c)^2 / 2 sigma^2)`` over observation pixels u for prompt-frame coords ``coord``.

    ``coord [...]`` -> ``[..., size]``. Pixel-index coordinates map between frames by their
    pixel centres: ``c = (coord + 0.5) * size / input_size - 0.5``.
    """
    c = (coord.to(torch.float32) + 0.5) * (size / input_size) - 0.5
    u = torch.arange(size, device=coord.device, dtype=torch.float32)
    return torch.exp(-((u - c.unsqueeze(-1)) ** 2) / (2.0 * sigma * sigma))


def click_gaussian(point: Tensor, input_size: int, size: int, sigma: float) -> Tensor:
    """``[B, 2]`` (x, y) prompt-frame points -> ``[B, size, size]`` Gaussian bumps."""
    gx = _axis_profile(point[:, 0], input_size, size, sigma)
    gy = _axis_profile(point[:, 1], input_size, size, sigma)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def add_click(heat: Tensor, point: Tensor, label: Tensor, active: Tensor, input_size: int,
              sigma: float) -> Tensor:
    """Add one click per row to ``heat [B, 2, S, S]`` (channel 0 fg, 1 bg).

    ``label [B]`` is SAM2's (1 fg, 0 bg); rows with ``active == False`` are unchanged.
    """
    bump = click_gaussian(point, input_size, heat.shape[-1], sigma)
    fg = (label == 1) & active
    bg = (label == 0) & active
    new_fg = torch.where(fg[:, None, None], torch.maximum(heat[:, 0], bump), heat[:, 0])
    new_bg = torch.where(bg[:, None, None], torch.maximum(heat[:, 1], bump), heat[:, 1])
    return torch.stack((new_fg, new_bg), dim=1)


def heatmaps_from_clicks(points: Tensor, labels: Tensor, input_size: int, size: int,
                         sigma: float) -> Tensor:
    """Reference: ``points [B, K, 2]``, ``labels [B, K]`` (-1 unused) -> ``[B, 2, S, S]``."""
    B, K, _ = points.shape
    bumps = click_gaussian(points.reshape(B * K, 2), input_size, size, sigma).view(B, K, size, size)
    out = []
    for lab in (1, 0):
        sel = (labels == lab)[:, :, None, None]
        out.append(torch.where(sel, bumps, torch.zeros_like(bumps)).amax(dim=1))
    return torch.stack(out, dim=1)


def resize_mask(mask: Tensor, size: int) -> Tensor:
    """Binary ``[B, M, M]`` -> float ``[B, S, S]`` by nearest-neighbour sampling
    (``F.interpolate(mode="nearest")``, which samples source pixel ``floor(i * M / S)``)."""
    M = mask.shape[-1]
    if M % size == 0 and mask.shape[-2] == M:  # integer factor: the same pixels, by slicing,
        step = M // size  # converting only the sampled quarter (or less) to float
        return mask[:, ::step, ::step].to(torch.float32)
    return F.interpolate(mask[:, None].to(torch.float32), size=(size, size), mode="nearest")[:, 0]


def resize_prob(logits: Tensor, size: int) -> Tensor:
    """Low-res logits ``[B, 1, M, M]`` -> ``[B, 1, S, S]`` probability (area average of sigmoid)."""
    return F.interpolate(torch.sigmoid(logits.to(torch.float32)), size=(size, size), mode="area")


def six_channels(rgb: Tensor, mask: Tensor, heat: Tensor) -> Tensor:
    """The prototype's observation: RGB in [0,1] (``rgb`` uint8 ``[B,3,S,S]``), binary mask
    (``[B, M, M]`` bool), fg and bg heatmaps (``heat [B,2,S,S]``) -> ``[B, 6, S, S]`` float32."""
    size = rgb.shape[-1]
    return torch.cat(
        (rgb.to(torch.float32) * (1.0 / 255.0), resize_mask(mask, size)[:, None], heat), dim=1
    )
