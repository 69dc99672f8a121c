"""Dataset files that cannot be read are named, never dropped: a symbolic link that loops or
points nowhere, and an image too large to decode safely."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpu_env.datasets import load_dataset
from gpu_env.datasets.io import DatasetError
from tests.test_datasets import _pair, _write


@pytest.mark.parametrize("split", ["all", "train"])
def test_an_image_link_that_loops_is_named(tmp_path: Path, split: str) -> None:
    _pair(tmp_path, "ok")
    _write(tmp_path / "masks" / "loop.png", np.full((30, 30), 255, np.uint8))
    os.symlink("loop.png", tmp_path / "images" / "loop.png")  # a link to itself
    (tmp_path / "train.txt").write_text("ok\nloop\n")
    with pytest.raises(DatasetError, match=r"images/loop\.png is a symbolic link that loops.*"
                                           r"Point it at the file or remove it"):
        load_dataset(str(tmp_path), split=split)


def test_a_mask_link_to_nothing_is_named(tmp_path: Path) -> None:
    _pair(tmp_path, "ok")
    _write(tmp_path / "images" / "gone.png", np.zeros((30, 30, 3), np.uint8))
    os.symlink(tmp_path / "elsewhere.png", tmp_path / "masks" / "gone.png")
    with pytest.raises(DatasetError, match=r"masks/gone\.png is a symbolic link that points to "
                                           r".*elsewhere\.png, which does not exist"):
        load_dataset(str(tmp_path))


def test_an_image_too_large_to_decode_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pair(tmp_path, "ok")
    big = _write(tmp_path / "images" / "huge.png", np.zeros((80, 80, 3), np.uint8))
    _write(tmp_path / "masks" / "huge.png", np.full((80, 80), 255, np.uint8))
    # A 20000 x 20000 file is refused by Pillow's limit; the same refusal at a lowered limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DatasetError, match=rf"{big} is too large to read \(6,400 pixels\): "
                                           r"Pillow refuses images over 2,000 pixels.*Downscale it"):
        load_dataset(str(tmp_path))
