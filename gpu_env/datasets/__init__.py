"""Datasets: one entry point, ``load_dataset(source, split, size, **kw) -> SegDataset``.

Sources:

* ``"synthetic"`` -- procedural polyp frames (kw: ``count``, ``seed``, ``orig_size``, ``device``);
  ``"synthetic:<seed>"`` -- the same generator with another seed (default 0): frames that no
  choice made on the default seed's splits has seen;
* ``"kvasir:<path>"`` -- Kvasir-SEG (kw: ``split_file``, ``device``); a bare path to a folder
  that looks like Kvasir-SEG (named ``*kvasir*`` or holding ``kavsir_bboxes.json``) too;
* any other path -- a folder with ``images/`` and ``masks/`` matched by stem (kw: ``split_file``,
  ``device``); ``"folder:<path>"`` forces this reading.

Bad input raises ``DatasetError`` (a ``ValueError``) naming the file or id at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .arrays import from_arrays
from .base import SegDataset
from .folder import load_folder
from .io import DatasetError
from .kvasir import load_kvasir, looks_like_kvasir
from .synthetic import load_synthetic

__all__ = ["DatasetError", "SegDataset", "from_arrays", "is_synthetic", "load_dataset"]


def is_synthetic(source: str) -> bool:
    """``"synthetic"`` or ``"synthetic:<seed>"`` (these take a ``count``)."""
    return source == "synthetic" or source.startswith("synthetic:")


def load_dataset(source: str, split: str = "all", size: int = 256, **kw: Any) -> SegDataset:
    """Load ``source`` (see the module docstring) as working-size tensors of side ``size``.

    For ``"synthetic"``, ``split="all"`` is a fourth stream, disjoint from train/val/test.
    """
    if source == "synthetic":
        return load_synthetic(split=split, size=size, **kw)
    if source.startswith("synthetic:"):
        text = source[len("synthetic:"):]
        if not text.isdigit():
            raise DatasetError(f"dataset source {source!r}: expected 'synthetic:<seed>' with a "
                               f"non-negative integer seed, e.g. 'synthetic:7'.")
        return load_synthetic(split=split, size=size, seed=int(text), **kw)
    if source.startswith("kvasir:"):
        return load_kvasir(source[len("kvasir:"):], split=split, size=size, **kw)
    if source.startswith("folder:"):
        return load_folder(source[len("folder:"):], split=split, size=size, **kw)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise DatasetError(
            f"dataset source {source!r} is neither 'synthetic', 'kvasir:<path>', 'folder:<path>' "
            "nor an existing folder."
        )
    if looks_like_kvasir(path):
        return load_kvasir(path, split=split, size=size, **kw)
    return load_folder(path, split=split, size=size, **kw)
