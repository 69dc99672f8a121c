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

    sam2_config: str = "sam2.1_hiera_b+"
    """SAM2.1 config: a short name (``t``, ``s``, ``b+``, ``l``, ``tiny``, ``base_plus``...), a
    shipped config's name or a yaml path (``sam_batch.model.resolve_config``)."""
    sam2_checkpoint: str | None = None
    """SAM2 checkpoint (the official .pt). None: RANDOM weights, for tests and benchmarks only
    (the features are meaningless for segmentation)."""
    sam2_seed: int = 0
    """Seed of the random SAM2 weights (only without a checkpoint)."""
    sam2_image_size: int | None = None
    """Override of SAM2's 1024 input side (a multiple of 32), for small random-weight models."""


@dataclass(frozen=True)
class SegmenterConfig(SAM2ModelConfig):
    """Which segmenter the env drives (``sam_batch.factory.build_segmenter`` builds it; the SAM2
    model is ``SAM2ModelConfig``'s, inherited so that the saved ``segmenter`` section stays
    flat)."""

    kind: Annotated[Literal["weightfree", "sam2"], tyro.conf.arg(name="segmenter")] = "weightfree"
    """``weightfree`` (classical, no checkpoint) or ``sam2`` (needs a feature cache)."""
    feature_cache: str | None = None
    """Feature cache directory made by ``sam2click-embed`` (per split; ``{split}`` is replaced).
    None with ``segmenter=sam2``: training refuses; evaluation-only commands encode in memory."""
