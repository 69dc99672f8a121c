"""Odd images and masks read correctly (12-bit in 16-bit PNG, 16-bit 0/255 masks, alpha-only
masks), --eval-images is honoured for folder datasets, and overlapping splits are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_env.datasets import load_dataset
from gpu_env.datasets.io import DatasetError, read_image, read_mask
from ppo.config import TrainConfig
from ppo.factory import build_envs


def _ellipse(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return ((y - h / 2) / (h / 4)) ** 2 + ((x - w / 2) / (w / 3)) ** 2 <= 1


def test_12_bit_image_in_16_bit_png_is_scaled_as_12_bit(tmp_path: Path) -> None:
    ramp = (np.arange(32 * 64).reshape(32, 64) * 2).astype(np.uint16)  # 0..4094
    Image.fromarray(ramp).save(tmp_path / "x.png")
    with pytest.warns(UserWarning, match=r"x\.png: 16-bit image with maximum 4094 .*12-bit"):
        rgb = read_image(tmp_path / "x.png")
    assert rgb.shape == (32, 64, 3)
    assert np.array_equal(rgb[..., 0], (ramp >> 4).astype(np.uint8)) and rgb.max() == 255


def test_16_bit_image_keeps_16_bit_scaling(tmp_path: Path) -> None:
    ramp = (np.arange(32 * 64).reshape(32, 64) * 30).astype(np.uint16)  # up to 61410
    Image.fromarray(ramp).save(tmp_path / "x.png")
    assert np.array_equal(read_image(tmp_path / "x.png")[..., 1], (ramp >> 8).astype(np.uint8))


@pytest.mark.parametrize("top", [255, 65535])
def test_16_bit_mask(tmp_path: Path, top: int) -> None:
    truth = _ellipse(40, 50)
    Image.fromarray((truth * top).astype(np.uint16)).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), truth)


@pytest.mark.parametrize("colour", [0, 255])
def test_mask_drawn_only_in_alpha(tmp_path: Path, colour: int) -> None:
    truth = _ellipse(40, 50)
    rgba = np.full((40, 50, 4), colour, np.uint8)
    rgba[..., 3] = truth * 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), truth)


def test_coloured_mask_on_transparent_background(tmp_path: Path) -> None:
    truth = _ellipse(40, 50)
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, visible only where drawn
    rgba[..., 3] = truth * 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), truth)
    rgba[..., 3] = 255  # opaque: the colour channels are the mask
    rgba[..., 0] = truth * 255
    Image.fromarray(rgba).save(tmp_path / "o.png")
    assert np.array_equal(read_mask(tmp_path / "o.png"), truth)


def _folder(root: Path, n: int = 5) -> Path:
    for k in range(n):
        img = np.full((48, 48, 3), 40 + 30 * k, np.uint8)
        mask = _ellipse(48, 48)
        img[mask] = 200
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"f{k}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"f{k}.png")
    (root / "train.txt").write_text("f0\nf1\nf2\n")
    (root / "val.txt").write_text("f3\nf4\n")
    return root


def _cfg(root: Path, **kw) -> TrainConfig:
    # Flat setting names through from_dict: the same call whether the config is flat or nested.
    return TrainConfig.from_dict(dict(dataset=str(root), device="cpu", image_size=32, obs_size=32,
                                      grid_size=8, max_clicks=2, num_envs=2, **kw))


def test_eval_images_honoured_for_folder_dataset(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    one = build_envs(_cfg(root, eval_images=1), torch.device("cpu"), train=False)
    assert one.eval_data.ids == ["f3"] and one.eval_env.num_images == 1
    two = build_envs(_cfg(root, eval_images=2), torch.device("cpu"), train=False)
    assert two.eval_data.ids == ["f3", "f4"]
    many = build_envs(_cfg(root, eval_images=9), torch.device("cpu"), train=False)  # all there are
    assert many.eval_data.ids == ["f3", "f4"]
    with pytest.raises(ValueError, match="--eval-images 0: expected at least 1"):
        build_envs(_cfg(root, eval_images=0), torch.device("cpu"), train=False)


def test_overlapping_val_and_train_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    (root / "val.txt").write_text("f2\nf3\n")
    with pytest.raises(DatasetError, match=r"held-out split 'val' shares 1 image\(s\) with the "
                                           r"training split 'train'.*: f2\."):
        build_envs(_cfg(root), torch.device("cpu"))
    (root / "val.txt").write_text("f3\nf4\n")
    envs = build_envs(_cfg(root, augment_copies=1), torch.device("cpu"))  # augmented ids are fine
    assert envs.train_data.ids[:3] == ["f0", "f1", "f2"] and envs.eval_data.ids == ["f3", "f4"]


def test_folder_dataset_with_16_bit_and_alpha_masks(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", n=2)
    truth = _ellipse(48, 48)
    Image.fromarray((truth * 255).astype(np.uint16)).save(root / "masks" / "f0.png")
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[..., 3] = truth * 255
    Image.fromarray(rgba).save(root / "masks" / "f1.png")
    ds = load_dataset(str(root), split="all", size=32)
    assert ds.masks.flatten(1).sum(1).min() > 0
