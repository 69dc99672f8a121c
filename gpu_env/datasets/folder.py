"""Any folder of image/mask pairs: ``<root>/images/*`` and ``<root>/masks/*`` matched by file stem.

Files ending in .png/.jpg/.jpeg/.tif/.tiff are read (hidden and other files are ignored); every
image must have exactly one mask with the same stem and the same size, and every mask an image.
Splits come from text files listing ids (file stems, one per line; a trailing image extension and
blank lines are tolerated): ``split_file=`` if given, else ``<root>/<split>.txt`` or
``<root>/splits/<split>.txt``. ``split="all"`` takes every pair, sorted by id.
All originals are read once at load time (to validate them and build the working copies) and
re-read lazily by ``load_original``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .base import SegDataset
from .io import (
    IMAGE_SUFFIXES,
    DatasetError,
    check_nonempty,
    list_images,
    read_image,
    read_mask,
    resize_images,
    resize_masks,
)


def find_pairs(root: Path) -> dict[str, tuple[Path, Path]]:
    """``id -> (image path, mask path)`` for every pair under ``root``; raises on any orphan."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder.")
    image_dir, mask_dir = root / "images", root / "masks"
    missing = [d.name for d in (image_dir, mask_dir) if not d.is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"{root} has no {' or '.join(m + '/' for m in missing)} subfolder (found folders: "
            f"{present or 'none'}); expected images/ and masks/ with files matched by stem."
        )
    images, masks = list_images(image_dir), list_images(mask_dir)
    if not images:
        raise DatasetError(
            f"{image_dir} holds no image files (looked for {', '.join(IMAGE_SUFFIXES)})."
        )
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        first = no_mask[0]
        raise DatasetError(
            f"image {images[first]} has no mask: expected {mask_dir / first}.<png|jpg|...>"
            + (f" ({len(no_mask)} images lack masks: {', '.join(no_mask[:10])}"
               f"{' ...' if len(no_mask) > 10 else ''})" if len(no_mask) > 1 else "")
            + ". Add the masks or remove those images."
        )
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise DatasetError(
            f"mask {masks[no_image[0]]} has no image: expected {image_dir / no_image[0]}.<png|jpg|...>"
            f" ({len(no_image)} orphan masks). Add the images or remove those masks."
        )
    return {k: (images[k], masks[k]) for k in sorted(images)}


def _split_path(root: Path, split: str, split_file: str | Path | None) -> Path | None:
    if split_file is not None:
        path = Path(split_file)
        if not path.is_file():
            raise DatasetError(f"split file {path} does not exist.")
        return path
    if split == "all":
        return None
    for path in (root / f"{split}.txt", root / "splits" / f"{split}.txt"):
        if path.is_file():
            return path
    raise DatasetError(
        f"no split file for split {split!r} in {root} (looked for {split}.txt and splits/{split}.txt). "
        "Pass split_file=<path> (ids one per line) or use split='all'."
    )


def read_split(path: Path, pairs: dict[str, tuple[Path, Path]]) -> list[str]:
    """Ids listed in a split file, in file order; raises on unknown or repeated ids."""
    ids: list[str] = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if name not in pairs and Path(name).suffix.lower() in IMAGE_SUFFIXES:
            name = Path(name).stem  # "cju0qkwl35piu0993l0dewei2.jpg" -> stem
        if name not in pairs:
            raise DatasetError(
                f"{path}:{line_no}: id {name!r} has no image/mask pair in the dataset folder; "
                "fix the split file or add the files."
            )
        if name in ids:
            raise DatasetError(f"{path}:{line_no}: id {name!r} is listed twice.")
        ids.append(name)
    if not ids:
        raise DatasetError(f"split file {path} lists no ids.")
    return ids


def load_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Original ``(H x W x 3 uint8, H x W bool)``; raises if the sizes differ."""
    image, mask = read_image(image_path), read_mask(mask_path)
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]} (W x H); they must match pixel for pixel."
        )
    return image, mask


def load_folder(
    root: str | Path,
    split: str = "all",
    size: int = 256,
    split_file: str | Path | None = None,
    device: torch.device | str = "cpu",
    name: str | None = None,
) -> SegDataset:
    """Load ``root`` (``images/`` + ``masks/``) as a ``SegDataset`` at working size ``size``.

    ``name`` defaults to a sanitised folder name (used in cache file names).
    """
    root = Path(root).expanduser()
    if size < 16:
        raise DatasetError(f"size={size}; expected a working size >= 16 (256 for SAM2).")
    pairs = find_pairs(root)
    path = _split_path(root, split, split_file)
    ids = read_split(path, pairs) if path is not None else list(pairs)
    images, masks, sizes, empty = [], [], [], []
    for i in ids:
        image, mask = load_pair(*pairs[i])
        if not mask.any():
            empty.append(i)
        sizes.append(image.shape[:2])
        images.append(resize_images(torch.from_numpy(image).permute(2, 0, 1)[None], size))
        masks.append(resize_masks(torch.from_numpy(mask)[None], size))
    if empty:
        raise DatasetError(
            f"{len(empty)} mask(s) in {root / 'masks'} have zero area (no pixel >= 128): "
            f"{', '.join(empty[:20])}{' ...' if len(empty) > 20 else ''}. An episode needs a "
            "foreground; remove these pairs or fix their masks (0/255 or 0/1)."
        )
    images_t, masks_t = torch.cat(images), torch.cat(masks)
    check_nonempty(masks_t, ids, f"{root} at working size {size} (polyps too small to survive resizing)")
    ordered = [pairs[i] for i in ids]

    def load_original(k: int) -> tuple[np.ndarray, np.ndarray]:
        return load_pair(*ordered[k])

    label = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", root.resolve().name) or "folder"
    return SegDataset(label, split, ids, images_t.to(device), masks_t.to(device), sizes, load_original)
