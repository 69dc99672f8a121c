"""The data section of a run: which images, which splits, how many."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImagesConfig:
    """Which images: a dataset source and the augmented copies of its training images. Training
    (``DataConfig``) and ``sam2click-embed`` share it: a SAM2 run's feature cache must hold the
    images training loads."""

    dataset: str = "synthetic"
    """The images: synthetic (generated polyp-like frames), synthetic:<seed>, kvasir:<folder>
    (Kvasir-SEG), folder:<folder>, or a folder with images/ and masks/."""
    # gpu_env.datasets.augment; each copy is its own image (its own row in a feature cache)
    augment_copies: int = 0
    """Augmented copies of each training image (flip, rotation, zoom, colour jitter), each
    trained on as an image of its own; held-out splits are never augmented. With --segmenter
    sam2 the feature cache must be built with the same --augment-copies and --augment-seed."""
    augment_seed: int = 0
    """Seed of the augmentation; the same seed gives the same copies."""


@dataclass(frozen=True)
class DataConfig(ImagesConfig):
    """Where the training and held-out images come from (``dataset`` and the augmentation are
    ``ImagesConfig``'s; inherited, so the saved ``data`` section stays flat)."""

    train_split: str = "train"
    """Split the agent trains on."""
    eval_split: str = "val"
    """Held-out split for evaluation."""
    # The generator takes ~14 s per 1,024 frames on 2 CPU cores; the mask prior needs the variety.
    train_images: int = 1024
    """Number of synthetic training images to generate (a folder's split is used whole)."""
    eval_images: int = 64
    """Number of held-out images evaluated: the first ones of the evaluation split."""
    image_size: int = 256
    """Side, in pixels, of the working copy of each image kept on the device."""
    shard_data: bool = False
    """With several processes: each trains on, and loads the features of, its own share of the
    training images (for training sets larger than one GPU's memory). Off: every process holds
    them all."""
