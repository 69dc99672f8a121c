"""The segmenter section of a run: which click-driven segmenter, and SAM2's build settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro


@dataclass(frozen=True)
class SAM2ModelConfig:
    """Which SAM2 model: config, weights and input size. Training (``SegmenterConfig``) and
    ``sam2click-embed`` share it: a feature cache must be built by the model training uses
    (caches record its fingerprint, and loading checks it)."""

    # resolved by sam_batch.model.resolve_config
    sam2_config: str = "sam2.1_hiera_b+"
    """SAM2.1 model config: a short name (t, s, b+, l), a config name shipped with SAM2, or a
    path to a YAML config."""
    sam2_checkpoint: str | None = None
    """Path to the SAM2 checkpoint (the official .pt file). Unset: random weights, which only
    tests and benchmarks should use: their masks are meaningless."""
    sam2_seed: int = 0
    """Seed of the random SAM2 weights (used only without a checkpoint)."""
    sam2_image_size: int | None = None
    """SAM2's input side in pixels, a multiple of 32 (unset: 1024); smaller sizes are for
    small random-weight models."""


@dataclass(frozen=True)
class SegmenterConfig(SAM2ModelConfig):
    """Which segmenter the env drives (``sam_batch.factory.build_segmenter`` builds it; the SAM2
    model is ``SAM2ModelConfig``'s, inherited so that the saved ``segmenter`` section stays
    flat)."""

    kind: Annotated[Literal["weightfree", "sam2"], tyro.conf.arg(name="segmenter")] = "weightfree"
    """weightfree: a classical click-driven segmenter that needs no checkpoint; sam2: SAM2's
    decoder on image features precomputed by sam2click-embed."""
    feature_cache: str | None = None
    """Feature cache folder written by sam2click-embed; {split} in it is replaced by the split's
    name. Training with --segmenter sam2 needs one; the evaluation commands encode the images
    themselves without it."""
