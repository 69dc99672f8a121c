"""The segmenter section of a run: which click-driven segmenter, and SAM2's build settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro


@dataclass(frozen=True)
class SegmenterConfig:
    """Which segmenter the env drives (``sam_batch.factory.build_segmenter`` builds it)."""

    kind: Annotated[Literal["weightfree", "sam2"], tyro.conf.arg(name="segmenter")] = "weightfree"
    """``weightfree`` (classical, no checkpoint) or ``sam2`` (needs a feature cache)."""
    sam2_config: str = "sam2.1_hiera_b+"
    """SAM2.1 config name (sam2 package)."""
    sam2_checkpoint: str | None = None
    """Local SAM2 checkpoint; None = random weights (benchmarks only)."""
    sam2_seed: int = 0
    """Seed of random SAM2 weights (only without a checkpoint; must match the cache's)."""
    sam2_image_size: int | None = None
    """Override of SAM2's input size (small random-weight models; must match the cache's)."""
    feature_cache: str | None = None
    """Feature cache directory made by ``sam2click-embed`` (per split; ``{split}`` is replaced).
    None with ``segmenter=sam2``: training refuses; evaluation-only commands encode in memory."""
