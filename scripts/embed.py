"""Encode a dataset's images with SAM2 into an on-disk feature cache (resumable).

    sam2click-embed --dataset kvasir:/data/Kvasir-SEG --checkpoint sam2.1_hiera_base_plus.pt \\
        --device cuda --out caches/kvasir-all__b+
    sam2click-embed --dataset synthetic --count 32 --config t --image-size 256   # random weights
    sam2click-embed --help

An interrupted run resumes where it stopped when started again with the same arguments.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import tyro

from ppo.command_options import DeviceConfig, flat_settings
from sam_batch.atomic_io import DiskFullError
from sam_batch.cache import CacheMeta, encode_to_cache, size_report
from sam_batch.model import build_sam, checkpoint_fingerprint, resolve_config


@dataclass
class EmbedConfig:
    """Encode a dataset with SAM2's image encoder into a feature cache directory.

    ``--batch-size``, ``--out``, ``--overwrite`` and ``--seed`` are this command's own (images
    per encoder forward, the cache directory, re-encoding a sound cache, the random SAM2
    weights), not the evaluation commands' settings of the same names
    (``ppo.command_options``)."""

    dataset: str = "synthetic"
    """Image source: ``synthetic``, ``kvasir:<path to Kvasir-SEG>``, ``folder:<path>`` or an image/mask folder path."""
    split: str = "all"
    """Dataset split to encode (``train``, ``val``, ``test`` or ``all``)."""
    count: int | None = None
    """Number of images for the synthetic dataset (its default when unset)."""
    augment_copies: int = 0
    """Also encode K augmented copies of each image (training splits only; train with the same
    ``--augment-copies``/``--augment-seed``), each its own cache row with its own GT."""
    augment_seed: int = 0
    """Seed of the augmentation parameters."""
    config: str = "sam2.1_hiera_b+"
    """SAM2 config: short name (t, s, b+, l, tiny, base_plus...) or a yaml path."""
    checkpoint: Path | None = None
    """SAM2 checkpoint (official .pt). Unset: RANDOM weights -- only for tests and benchmarks."""
    seed: int = 0
    """Seed of the random weights (used only without a checkpoint)."""
    image_size: int | None = None
    """Override SAM2's 1024 input side (multiple of 32); for small random-weight tests only."""
    device: DeviceConfig = field(default_factory=DeviceConfig)
    batch_size: int = 4
    """Images per encoder forward."""
    dtype: Literal["float16", "bfloat16"] = "float16"
    """Storage precision of the cached features."""
    out: Path | None = None
    """Cache directory; default ``caches/<dataset>-<split>__<config>``."""
    overwrite: bool = False
    """Re-encode even if ``out`` already holds a complete cache of the same images and model."""
    progress: bool = True
    """Show a progress bar."""


def default_out(cfg: EmbedConfig) -> Path:
    """``caches/<dataset>-<split>__<config>`` with path-unsafe characters replaced."""
    name = cfg.dataset.split(":", 1)[0] if ":" in cfg.dataset else Path(cfg.dataset).name or "dataset"
    config_name, _ = resolve_config(cfg.config)
    size = f"@{cfg.image_size}" if cfg.image_size else ""
    aug = f"+aug{cfg.augment_copies}s{cfg.augment_seed}" if cfg.augment_copies else ""
    stem = f"{name}-{cfg.split}{aug}__{config_name}{size}".replace("/", "_").replace("+", "p")
    return Path("caches") / stem


def _load_dataset(cfg: EmbedConfig) -> Any:
    from gpu_env.datasets import load_dataset

    from gpu_env.datasets.augment import augment

    kw = {"count": cfg.count} if cfg.count is not None else {}
    return augment(load_dataset(cfg.dataset, split=cfg.split, **kw), cfg.augment_copies,
                   cfg.augment_seed)


def embed(cfg: EmbedConfig, dataset: Any | None = None) -> tuple[Path, CacheMeta]:
    """Build the cache described by ``cfg``; ``dataset`` (a ``SegDataset``-like object with
    ``ids``, ``original_sizes``, ``load_original``) overrides loading ``cfg.dataset``."""
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size {cfg.batch_size} must be >= 1")
    config_name, _ = resolve_config(cfg.config)
    device = cfg.device.resolve()  # before any work: `--device cuda` without CUDA says so
    if cfg.checkpoint is None:
        msg = (f"NO --checkpoint GIVEN: encoding with RANDOM {config_name} weights (seed {cfg.seed}). "
               "The features are meaningless for segmentation; use this only for tests/benchmarks.")
        warnings.warn(msg, stacklevel=2)
        print(f"\n{'!' * 100}\n{msg}\n{'!' * 100}\n", file=sys.stderr)
    data = dataset if dataset is not None else _load_dataset(cfg)
    # The config as given (a name or a yaml path): resolve_config is the one resolver, and the
    # cache records its canonical name (a yaml path's stem).
    model = build_sam(cfg.config, cfg.checkpoint, device=device, seed=cfg.seed, image_size=cfg.image_size)
    fingerprint = checkpoint_fingerprint(cfg.checkpoint, cfg.config, cfg.seed, cfg.image_size)
    out = cfg.out if cfg.out is not None else default_out(cfg)
    resolved = {k: (str(v) if isinstance(v, Path) else v) for k, v in flat_settings(cfg).items()}
    resolved["out"] = str(out)
    meta = encode_to_cache(
        model,
        lambda i: data.load_original(i)[0],
        list(data.ids),
        out,
        config_name=config_name,
        fingerprint=fingerprint,
        original_sizes=[tuple(s) for s in data.original_sizes],
        batch_size=cfg.batch_size,
        dtype=getattr(torch, cfg.dtype),
        progress=cfg.progress,
        overwrite=cfg.overwrite,
        extra_meta={"dataset": getattr(data, "name", cfg.dataset), "split": getattr(data, "split", cfg.split),
                    "embed_config": resolved},
    )
    return out, meta


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(tyro.conf.OmitArgPrefixes[EmbedConfig], args=argv, description=__doc__)
    try:
        out, meta = embed(cfg)
    except (ValueError, DiskFullError) as e:  # CacheError, SAM2LoadError, bad flags: say it plainly
        print(f"embed: error: {e}", file=sys.stderr)
        return 2
    print(f"feature cache: {out}")
    print(f"size: {size_report(meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
