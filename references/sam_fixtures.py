"""Shared helpers and fixtures for the SAM2-backend tests (import what you use).

Everything uses the smallest SAM2.1 config (hiera_t) with random weights at a small input size,
so the image encoder costs ~0.1 s per image on a CPU.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor

from sam_batch.encoder import SAM2Features, feature_shapes
from sam_batch.model import build_sam

TINY_CONFIG = "sam2.1_hiera_t"
TINY_SIZE = 256  # image_size override: 16x16 embedding, 64x64 low-res masks


@functools.lru_cache(maxsize=4)
def tiny_model(image_size: int = TINY_SIZE, seed: int = 0) -> torch.nn.Module:
    """Shared hiera_t model with random weights (eval). Do not mutate it; use
    :func:`decoder_settings` for temporary changes."""
    return build_sam(TINY_CONFIG, None, device="cpu", seed=seed, image_size=image_size)


@pytest.fixture(scope="session")
def tiny_sam() -> torch.nn.Module:
    return tiny_model()


class decoder_settings:
    """Context manager: temporarily set attributes of ``model.sam_mask_decoder``."""

    def __init__(self, model: torch.nn.Module, **attrs: object) -> None:
        self.md = model.sam_mask_decoder
        self.attrs = attrs
        self.saved: dict[str, object] = {}

    def __enter__(self) -> "decoder_settings":
        for k, v in self.attrs.items():
            self.saved[k] = getattr(self.md, k)
            setattr(self.md, k, v)
        return self

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            setattr(self.md, k, v)


def random_features(model: torch.nn.Module, n: int, seed: int = 0, dtype: torch.dtype = torch.float16) -> SAM2Features:
    """``n`` images' worth of random cached features with realistic scale (unit normal)."""
    g = torch.Generator().manual_seed(seed)
    return SAM2Features(*(torch.randn(n, *s, generator=g).to(dtype) for s in feature_shapes(model)))


class Episodes(NamedTuple):
    image_ids: Tensor
    points: Tensor
    labels: Tensor
    mask_input: Tensor
    has_mask_input: Tensor
    multimask: Tensor
    num_clicks: Tensor


def random_episodes(b: int, k: int, num_images: int, input_size: int, mask_size: int, seed: int = 0,
                    min_clicks: int = 1) -> Episodes:
    """A batch of episodes with 1..k valid clicks each (rest labelled -1, sometimes with junk
    coordinates), mixed mask_input use, multimask on the first click only (as in the env)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, num_images, (b,), generator=g)
    points = torch.rand(b, k, 2, generator=g) * (input_size - 1)
    n = torch.randint(min_clicks, k + 1, (b,), generator=g)
    n[: min(b, 2)] = torch.tensor([1, k])[: min(b, 2)]  # always cover both extremes
    lab = torch.randint(0, 2, (b, k), generator=g)
    lab[:, 0] = 1
    valid = torch.arange(k)[None] < n[:, None]
    labels = torch.where(valid, lab, -1)
    mask_input = torch.randn(b, 1, mask_size, mask_size, generator=g) * 4
    has_mask = torch.rand(b, generator=g) < 0.5
    if b > 1:
        has_mask[0], has_mask[1] = True, False
    multimask = n == 1
    return Episodes(ids, points, labels, mask_input, has_mask, multimask, n)


def synthetic_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth random RGB uint8 images of different (non-square) sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 96 + 16 * (i % 3), 128 + 24 * (i % 2)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy))], axis=-1)
        img = 127.5 * (1 + 0.8 * base) + rng.normal(0, 8, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out
