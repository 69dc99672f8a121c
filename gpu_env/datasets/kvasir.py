"""Kvasir-SEG (Jha et al., 2020): 1000 polyp frames, ``images/*.jpg`` + ``masks/*.jpg``.

Frames range from 332x487 to 1920x1072; masks are lossy JPEGs, binarised by the rules of
``io`` (max channel >= 128; at most 5 % mid-grey pixels). The official 880/120 split is
distributed as ``train.txt`` / ``val.txt`` (ids one per line); put them in the dataset root (or
``splits/``), or pass ``split_file=``. The dataset is not downloaded by this project: get it
from https://datasets.simula.no/kvasir-seg/ and point ``kvasir:<path>`` at the unpacked folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import SegDataset
from .folder import load_folder
from .io import DatasetError


def looks_like_kvasir(root: str | Path) -> bool:
    """True for a folder named like Kvasir-SEG or holding its bounding-box file."""
    root = Path(root)
    return "kvasir" in root.resolve().name.lower() or (root / "kavsir_bboxes.json").is_file()


def load_kvasir(
    root: str | Path,
    split: str = "all",
    size: int = 256,
    split_file: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> SegDataset:
    """Kvasir-SEG at ``root`` as a ``SegDataset`` named ``kvasir`` (see ``folder.load_folder``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"Kvasir-SEG folder {root} does not exist. Download Kvasir-SEG from "
            "https://datasets.simula.no/kvasir-seg/, unpack it and pass kvasir:<path to Kvasir-SEG>."
        )
    return load_folder(root, split=split, size=size, split_file=split_file, device=device, name="kvasir")
