"""Augmented copies of a training split: each copy is an image of its own, with its own GT.

The prototype trained on an augmented Kvasir-SEG (4,800 frames from 880). ``augment(ds, K)``
returns the dataset followed by K transformed copies of every image, the same transform applied
to the image and its mask at their *original* resolution (so ``scripts.embed`` encodes exactly
the copy the env trains on), then resized like any source. Per copy:

* a horizontal flip (probability 1/2) and a rotation by a multiple of 90 degrees;
* a zoom by a factor in [1 - scale, 1 + scale] about the centre (crop or zero-pad back to the
  size; the mask resampled by nearest neighbour);
* colour jitter: brightness x [1 - colour, 1 + colour] and a per-channel gain of the same range,
  on the image only.

Copy k of image ``i`` draws its parameters from a generator seeded by (``seed``, the image id,
k): deterministic per seed, independent of the order or number of images. Copies are named
``<id>~aug<k>`` (k = 1..K). Evaluation splits are never augmented (``scripts.train`` augments
only its training split; ``scripts.embed`` refuses val/test).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from .base import SegDataset
from .io import DatasetError, check_nonempty, resize_images, resize_masks

__all__ = ["augment", "augment_pair", "EVAL_SPLITS"]

EVAL_SPLITS = ("val", "test")


def _params(seed: int, image_id: str, copy: int, scale: float, colour: float) -> dict:
    digest = hashlib.blake2b(f"augment/{seed}/{image_id}/{copy}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    u = torch.rand(7, generator=gen, dtype=torch.float64).tolist()
    return {"flip": u[0] < 0.5, "rot": int(u[1] * 4) % 4, "zoom": 1 + scale * (2 * u[2] - 1),
            "bright": 1 + colour * (2 * u[3] - 1),
            "gain": [1 + colour * (2 * g - 1) for g in u[4:7]]}


def _zoom(x: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    """``[C, H, W]`` float zoomed about the centre, same size (crop or zero-pad)."""
    C, H, W = x.shape
    h, w = max(1, round(H * factor)), max(1, round(W * factor))
    kw = {"align_corners": False} if mode == "bilinear" else {}
    y = F.interpolate(x[None], size=(h, w), mode=mode, **kw)[0]
    out = torch.zeros_like(x)
    # centre crop (factor > 1) or centre paste (factor < 1)
    sy, sx = max(0, (h - H) // 2), max(0, (w - W) // 2)
    dy, dx = max(0, (H - h) // 2), max(0, (W - w) // 2)
    ch, cw = min(H, h), min(W, w)
    out[:, dy:dy + ch, dx:dx + cw] = y[:, sy:sy + ch, sx:sx + cw]
    return out


def augment_pair(image: np.ndarray, mask: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Apply one copy's transform to ``image HxWx3 uint8`` and ``mask HxW bool``."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    msk = torch.from_numpy(np.ascontiguousarray(mask)).float()[None]
    if params["flip"]:
        img, msk = img.flip(-1), msk.flip(-1)
    if params["rot"]:
        img, msk = torch.rot90(img, params["rot"], (1, 2)), torch.rot90(msk, params["rot"], (1, 2))
    img = _zoom(img, params["zoom"], "bilinear")
    msk = _zoom(msk, params["zoom"], "nearest")
    gain = torch.tensor(params["gain"], dtype=torch.float32).view(3, 1, 1) * params["bright"]
    img = (img * gain).round().clamp(0, 255).to(torch.uint8)
    return img.permute(1, 2, 0).contiguous().numpy(), msk[0].numpy() > 0.5


def augment(ds: SegDataset, copies: int, seed: int = 0, *, scale: float = 0.1,
            colour: float = 0.1) -> SegDataset:
    """``ds`` followed by ``copies`` augmented copies of each of its images (see the module
    docstring). ``copies == 0`` returns ``ds`` itself."""
    if copies < 0:
        raise DatasetError(f"augment copies={copies}; expected 0 or more copies per image.")
    if copies == 0:
        return ds
    if ds.split in EVAL_SPLITS:
        raise DatasetError(
            f"refusing to augment the {ds.split!r} split of {ds.name}: evaluation splits are "
            f"never augmented (augment the training split only)."
        )
    size = ds.size
    base = ds.load_original
    entries = [(i, k) for k in range(1, copies + 1) for i in range(len(ds))]
    params = [_params(seed, ds.ids[i], k, scale, colour) for i, k in entries]
    images, masks, sizes = [ds.images], [ds.masks], list(ds.original_sizes)
    for j, (i, _) in enumerate(entries):
        img, msk = augment_pair(*base(i), params[j])
        if not msk.any():  # the zoom cut a small object out of the frame: keep it unzoomed
            params[j] = {**params[j], "zoom": 1.0}
            img, msk = augment_pair(*base(i), params[j])
        images.append(resize_images(torch.from_numpy(img).permute(2, 0, 1)[None], size).to(ds.images.device))
        masks.append(resize_masks(torch.from_numpy(msk)[None], size).to(ds.masks.device))
        sizes.append((img.shape[0], img.shape[1]))
    n = len(ds)
    ids = list(ds.ids) + [f"{ds.ids[i]}~aug{k}" for i, k in entries]
    images_t, masks_t = torch.cat(images), torch.cat(masks)
    check_nonempty(masks_t, ids, f"{ds.name}/{ds.split} augmented (seed {seed})")

    def load_original(j: int) -> tuple[np.ndarray, np.ndarray]:
        if j < n:
            return base(j)
        i, _ = entries[j - n]
        return augment_pair(*base(i), params[j - n])

    return SegDataset(f"{ds.name}+aug{copies}s{seed}", ds.split, ids, images_t, masks_t, sizes,
                      load_original)
