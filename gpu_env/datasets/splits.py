"""Rules between a run's splits: how many held-out images, and no image in two splits."""

from __future__ import annotations

import logging

from .base import SegDataset
from .io import DatasetError

log = logging.getLogger(__name__)

AUGMENTED_MARK = "~aug"
"""Augmented copies are ids ``<id>~aug<k>`` (``gpu_env.datasets.augment``); they count as ``<id>``."""


def first_images(data: SegDataset, count: int, flag: str = "--eval-images") -> list[int] | None:
    """Positions of the first ``count`` images of ``data`` (``None``: all of them).

    A count of 0 (or less) is refused: an evaluation of no images has no mean. A count larger
    than the split uses the whole split (logged, not warned: the default of 64 means "up to 64",
    and a run records how many images it evaluated)."""
    if count < 1:
        raise ValueError(f"{flag} {count}: expected at least 1 held-out image (the evaluation "
                         f"averages over them); {data.name}/{data.split} has {len(data)}.")
    if count > len(data):
        log.info("%s %d but %s/%s has only %d images; evaluating all of them", flag, count,
                 data.name, data.split, len(data))
        return None
    return None if count == len(data) else list(range(count))


def _base_id(i: str) -> str:
    return i.split(AUGMENTED_MARK, 1)[0]


def check_disjoint(train: SegDataset, held: SegDataset) -> None:
    """Refuse a held-out split that shares images (by id) with the training split: scores on
    images the agent trained on are not held-out scores."""
    shared = sorted({_base_id(i) for i in train.ids} & {_base_id(i) for i in held.ids})
    if shared:
        shown = ", ".join(shared[:10]) + (f" ... ({len(shared)} in all)" if len(shared) > 10 else "")
        raise DatasetError(
            f"the held-out split {held.split!r} shares {len(shared)} image(s) with the training "
            f"split {train.split!r} of {train.name}: {shown}. Evaluate on images the agent never "
            "trains on: fix the split files (ids one per line) so that they do not overlap."
        )
