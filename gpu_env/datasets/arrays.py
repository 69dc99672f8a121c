"""A dataset from in-memory arrays (what the prototype's users hand to ``SAM2ClickEnv``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import SegDataset
from .io import DatasetError, binarize_mask, check_nonempty, resize_images, resize_masks


def from_arrays(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], size: int = 256,
                name: str = "arrays", ids: Sequence[str] | None = None,
                device: torch.device | str = "cpu") -> SegDataset:
    """``images`` (HxWx3 uint8) and ``masks`` (HxW, binary-like: bool, 0/1 or 0/255) of equal
    count and per-pair equal size -> ``SegDataset`` with working copies of side ``size``."""
    if len(images) != len(masks) or len(images) == 0:
        raise DatasetError(f"need equally many images and masks (>= 1), got {len(images)} "
                           f"images and {len(masks)} masks.")
    ids = [f"{name}-{i}" for i in range(len(images))] if ids is None else list(ids)
    originals, work_i, work_m = [], [], []
    for k, (img, msk) in enumerate(zip(images, masks)):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise DatasetError(f"image {ids[k]}: expected HxWx3 uint8, got shape {img.shape} "
                               f"dtype {img.dtype}.")
        m = np.asarray(msk)
        m = m.astype(bool) if m.dtype == bool else binarize_mask(
            m.astype(np.uint8) * (255 if m.max() <= 1 else 1), ids[k])
        if m.shape != img.shape[:2]:
            raise DatasetError(f"mask {ids[k]}: shape {m.shape} != image size {img.shape[:2]}.")
        originals.append((img, m))
        work_i.append(resize_images(torch.from_numpy(img).permute(2, 0, 1)[None], size))
        work_m.append(resize_masks(torch.from_numpy(m)[None], size))
    images_t, masks_t = torch.cat(work_i), torch.cat(work_m)
    check_nonempty(masks_t, ids, name)
    return SegDataset(name, "all", ids, images_t.to(device), masks_t.to(device),
                      [o[0].shape[:2] for o in originals], lambda i: originals[i])
