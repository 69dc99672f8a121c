"""The dataset interface every source (synthetic, Kvasir-SEG, image/mask folder) provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass
class SegDataset:
    """N RGB images with binary ground-truth masks, held as working-size tensors.

    ``images``/``masks`` are square working-size copies (resized from the originals) that the
    environment keeps on its device; ``load_original(i)`` returns the image and mask at their
    original resolution (for SAM2 encoding and original-resolution evaluation).
    """

    name: str
    """Dataset name, used in cache/result file names (e.g. ``"synthetic"``, ``"kvasir"``)."""
    split: str
    """Split name (``"train"``, ``"val"``, ``"test"`` or ``"all"``)."""
    ids: list[str]
    """One id per image (file stem for folders, ``"syn-<seed>-<index>"`` for synthetic)."""
    images: Tensor
    """``[N, 3, S, S]`` uint8 RGB at the working size S."""
    masks: Tensor
    """``[N, S, S]`` bool ground truth at the working size S."""
    original_sizes: list[tuple[int, int]]
    """``(H, W)`` of each original image."""
    load_original: Callable[[int], tuple[np.ndarray, np.ndarray]] = field(repr=False)
    """``i -> (image HxWx3 uint8, mask HxW bool)`` at original resolution."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def to(self, device: torch.device | str) -> "SegDataset":
        """A copy whose working tensors live on ``device`` (originals stay lazy on the host)."""
        return SegDataset(
            self.name, self.split, list(self.ids), self.images.to(device), self.masks.to(device),
            list(self.original_sizes), self.load_original,
        )

    def subset(self, indices: Sequence[int]) -> "SegDataset":
        """The images ``indices`` (in that order) as a dataset of their own: working tensors
        are indexed, ``load_original(j)`` reads original ``indices[j]``. Used to give each
        process of a multi-process run its own shard of the training images."""
        idx = [int(i) for i in indices]
        n = len(self)
        bad = [i for i in idx if not 0 <= i < n]
        if not idx or bad or len(set(idx)) != len(idx):
            why = ("none (an empty subset)" if not idx else f"out of range: {bad[:5]}" if bad
                   else "duplicates")
            raise ValueError(
                f"subset of {self.name}/{self.split}: expected unique indices in [0, {n}), "
                f"got {len(idx)} with {why}; pass distinct valid image indices."
            )
        load = self.load_original
        rows = torch.tensor(idx, dtype=torch.int64, device=self.images.device)
        return SegDataset(
            self.name, self.split, [self.ids[i] for i in idx], self.images[rows],
            self.masks[rows], [self.original_sizes[i] for i in idx], lambda j: load(idx[j]),
        )
