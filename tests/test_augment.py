"""Augmented training copies: deterministic per seed, image and mask transformed together, the
cache built by ``embed`` matches what training loads, evaluation splits refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpu_env.datasets import DatasetError, load_dataset
from gpu_env.datasets.augment import augment, augment_pair


@pytest.fixture(scope="module")
def base():
    return load_dataset("synthetic", split="train", size=64, count=4)


def test_copies_follow_the_originals_with_their_own_ids(base):
    aug = augment(base, 2, seed=3)
    assert len(aug) == 12 and aug.ids[:4] == base.ids
    assert aug.ids[4] == f"{base.ids[0]}~aug1" and aug.ids[8] == f"{base.ids[0]}~aug2"
    assert torch.equal(aug.images[:4], base.images) and torch.equal(aug.masks[:4], base.masks)
    assert not torch.equal(aug.images[4:8], base.images)
    assert aug.masks[4:].flatten(1).any(1).all()  # every copy keeps its object


def test_deterministic_per_seed_and_different_across_seeds(base):
    a, b, c = augment(base, 1, seed=3), augment(base, 1, seed=3), augment(base, 1, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images[4:], c.images[4:])


def test_working_tensors_are_the_resized_augmented_originals(base):
    """What the env trains on and what embed encodes (load_original) are the same copy."""
    from gpu_env.datasets.io import resize_images, resize_masks

    aug = augment(base, 1, seed=5)
    for j in (4, 7):
        img, msk = aug.load_original(j)
        assert aug.original_sizes[j] == img.shape[:2] == msk.shape
        assert torch.equal(resize_images(torch.from_numpy(img).permute(2, 0, 1)[None], 64)[0],
                           aug.images[j])
        assert torch.equal(resize_masks(torch.from_numpy(msk)[None], 64)[0], aug.masks[j])


def test_geometry_moves_image_and_mask_together():
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    image[2:6, 3:9] = 200
    mask[2:6, 3:9] = True
    p = {"flip": True, "rot": 1, "zoom": 1.0, "bright": 1.0, "gain": [1.0, 1.0, 1.0]}
    img, msk = augment_pair(image, mask, p)
    assert img.shape == (30, 20, 3) and msk.shape == (30, 20)
    assert np.array_equal(img[..., 0] == 200, msk)


def test_evaluation_splits_are_never_augmented():
    val = load_dataset("synthetic", split="val", size=64, count=2)
    with pytest.raises(DatasetError, match="evaluation splits are never augmented"):
        augment(val, 1)
    with pytest.raises(DatasetError, match="copies=-1"):
        augment(val, -1)


def test_training_loads_the_augmented_split_and_embed_caches_the_same_rows(tmp_path, capsys):
    from ppo.config import TrainConfig
    from ppo.factory import load_split
    from sam_batch.cache import load_cache
    from scripts import embed

    cfg = TrainConfig().replace(augment_copies=1, augment_seed=2, image_size=64)
    train = load_split(cfg.data, "train", 3)
    held = load_split(cfg.data, "val", 2)
    assert len(train) == 6 and len(held) == 2
    out = tmp_path / "cache"
    assert embed.main(["--dataset", "synthetic", "--split", "train", "--count", "3",
                       "--augment-copies", "1", "--augment-seed", "2", "--config", "t",
                       "--image-size", "256", "--device", "cpu", "--out", str(out),
                       "--no-progress"]) == 0
    assert load_cache(out).meta["image_ids"] == train.ids
    # embed's command line reports a DatasetError as one line and exit status 2
    assert embed.main(["--dataset", "synthetic", "--split", "val", "--count", "2",
                       "--augment-copies", "1", "--config", "t", "--image-size", "256",
                       "--device", "cpu", "--out", str(tmp_path / "v"), "--no-progress"]) == 2
    assert "never augmented" in capsys.readouterr().err
