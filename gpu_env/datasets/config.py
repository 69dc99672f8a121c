"""The data section of a run: which images, which splits, how many."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImagesConfig:
    """Which images: a dataset source and the augmented copies of its training images. Training
    (``DataConfig``) and ``sam2click-embed`` share it: a SAM2 run's feature cache must hold the
    images training loads."""

    dataset: str = "synthetic"
    """``synthetic``, ``synthetic:<seed>``, ``kvasir:<folder>``, ``folder:<folder>`` or an
    image/mask folder."""
    augment_copies: int = 0
    """Augmented copies of each training image (flip, 90-degree rotation, zoom and colour
    jitter on image and mask together; ``gpu_env.datasets.augment``), each its own image with its
    own GT (in a feature cache, its own row); the held-out splits are never augmented. With
    ``segmenter=sam2`` the training split's feature cache must be built with the same
    ``--augment-copies``/``--augment-seed`` (``sam2click-embed``)."""
    augment_seed: int = 0
    """Seed of the augmentation parameters (deterministic per seed and image id)."""


@dataclass(frozen=True)
class DataConfig(ImagesConfig):
    """Where the training and held-out images come from (``dataset`` and the augmentation are
    ``ImagesConfig``'s; inherited, so the saved ``data`` section stays flat)."""

    train_split: str = "train"
    """Split the agent trains on."""
    eval_split: str = "val"
    """Held-out split for evaluation."""
    train_images: int = 1024
    """Number of synthetic training images (ignored for folders). The generator is cheap
    (~14 s per 1,024 frames on 2 CPU cores) and the mask prior needs the variety."""
    eval_images: int = 64
    """Number of held-out images evaluated (the first ones of ``eval_split``)."""
    image_size: int = 256
    """Working size of dataset images kept on the device."""
    shard_data: bool = False
    """Multi-process runs: rank r trains on images r::world_size only and loads only their
    features (for training sets larger than one GPU's memory); off: every rank holds them all."""
