"""The images a feature cache was built from, by content: each image's fingerprint is a hash of
its decoded pixels (dtype, shape and bytes), recorded in ``meta.json`` when it is encoded.

Comparing them with the images of today tells which images changed on disk under the same id,
which ids were added and which removed, so that ``sam2click-embed`` re-encodes only those and
loading refuses features of pixels that are no longer there. Hashing decoded pixels rather than
file bytes covers every source alike (image files, augmented copies, generated images, arrays
passed in memory) and is what the features are a function of; it costs one decode per image
(BLAKE2b runs at ~1 GB/s, well under a JPEG decode)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageChanges", "compare_images", "hash_images", "image_hash", "name_ids"]


def image_hash(image: np.ndarray) -> str:
    """Fingerprint of one image's pixels: 32 hex digits of BLAKE2b over dtype, shape and bytes."""
    a = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def hash_images(load: Callable[[int], np.ndarray], rows: Sequence[int], *, progress: bool = False,
                desc: str = "checking images") -> list[str]:
    """The fingerprints of images ``rows`` as ``load`` returns them today (each decoded once)."""
    from tqdm.auto import tqdm

    return [image_hash(load(int(i))) for i in tqdm(rows, desc=desc, unit="img", disable=not progress)]


def name_ids(ids: Sequence[str], most: int = 5) -> str:
    """``'a', 'b' and 3 more``: a few ids for a message."""
    shown = ", ".join(repr(i) for i in ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


@dataclass
class ImageChanges:
    """How today's images differ from the ones a cache was built from, by id."""

    changed: list[str] = field(default_factory=list)
    """Ids whose pixels differ from the encoded ones."""
    added: list[str] = field(default_factory=list)
    """Ids the cache does not hold."""
    removed: list[str] = field(default_factory=list)
    """Ids the cache holds that are gone."""

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def describe(self) -> str:
        """One phrase per kind of change, each naming its images."""
        parts = [f"{len(v)} {k} ({name_ids(v)})" for k, v in
                 (("changed on disk", self.changed), ("added", self.added), ("removed", self.removed)) if v]
        return "; ".join(parts) if parts else "no image changed"


def compare_images(old_ids: Sequence[str], old_hashes: Sequence[str] | None, new_ids: Sequence[str],
                   new_hashes: Sequence[str]) -> ImageChanges:
    """What changed between a cache's images (``old_hashes`` ``None``: fingerprints not recorded,
    so only ids are compared) and today's."""
    old = dict(zip(old_ids, old_hashes)) if old_hashes is not None else {i: None for i in old_ids}
    new = set(new_ids)
    return ImageChanges(
        changed=[i for i, h in zip(new_ids, new_hashes) if i in old and old[i] is not None and old[i] != h],
        added=[i for i in new_ids if i not in old],
        removed=[i for i in old_ids if i not in new],
    )
