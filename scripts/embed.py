"""Encode a dataset's images with SAM2 into an on-disk feature cache (resumable).

    sam2click-embed --dataset kvasir:/data/Kvasir-SEG \\
        --sam2-checkpoint sam2.1_hiera_base_plus.pt --device cuda --out caches/kvasir-all__b+
    sam2click-embed --dataset synthetic --count 32 --sam2-config t --sam2-image-size 256
        # (random weights)

The SAM2 flags are the same as sam2click-train's, since training must load the cache with the
model that built it (--config, --checkpoint, --seed and --image-size are accepted as older
names). An interrupted run resumes where it stopped when started again with the same
arguments.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from gpu_env.datasets.config import ImagesConfig
from ppo.command_options import (DeviceConfig, ProgressConfig, SplitConfig, command_registry,
                                 flat_settings)
from sam_batch.atomic_io import DiskFullError
from sam_batch.cache import CacheMeta, encode_to_cache, partial_dir, size_report
from sam_batch.cache_folder import check_owned
from sam_batch.config import SAM2ModelConfig
from sam_batch.factory import build_sam2_model
from sam_batch.model import checkpoint_fingerprint, resolve_config

from ._command import cli, command_name

OLD_FLAGS = {SAM2ModelConfig: {"sam2_config": ("--config",), "sam2_checkpoint": ("--checkpoint",),
                               "sam2_seed": ("--seed",), "sam2_image_size": ("--image-size",)}}
"""This command's names of the SAM2 model settings before they became training's, kept working."""


@dataclass
class EmbedConfig:
    """Encode a dataset with SAM2's image encoder into a feature cache directory.

    The images (``--dataset``, ``--augment-copies``, ``--augment-seed``) and the SAM2 model
    (``--sam2-config``...) are declared once with training's, which must load this cache.
    ``--batch-size``, ``--count``, ``--out`` and ``--overwrite`` are this command's own (images
    per encoder forward, synthetic images generated, the cache directory, re-encoding a sound
    cache), not the other commands' settings of the same names (``ppo.command_options``)."""

    images: ImagesConfig = field(default_factory=ImagesConfig)
    """The images to encode (the same flags as sam2click-train's)."""
    split: SplitConfig = field(default_factory=SplitConfig)
    """The one split encoded."""
    count: int | None = None
    """Number of images for the synthetic dataset (its default when unset)."""
    model: SAM2ModelConfig = field(default_factory=SAM2ModelConfig)
    """The SAM2 model that encodes them; training must use the same."""
    device: DeviceConfig = field(default_factory=DeviceConfig)
    """Where the encoder runs."""
    batch_size: int = 4
    """Images per encoder forward."""
    dtype: Literal["float16", "bfloat16"] = "float16"
    """Storage precision of the cached features."""
    out: Path | None = None
    """Cache folder. Default: caches/<dataset>-<split>__<config> under the working directory."""
    overwrite: bool = False
    """Replace a cache of another model, dtype, dataset, split or augmentation at ``out``, or
    re-encode a complete cache of this one from scratch. Without it such a cache is refused, and
    a cache of this job is checked and brought up to date (damaged or changed images
    re-encoded). A folder holding anything but a cache is refused either way."""
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    """What the command shows while it works."""


def parse(argv: list[str] | None = None) -> EmbedConfig:
    """The config of a command line (``OLD_FLAGS`` included), as ``sam2click-embed`` parses it."""
    return cli("embed", EmbedConfig, argv, __doc__, registry=command_registry(aliases=OLD_FLAGS))


def default_out(cfg: EmbedConfig) -> Path:
    """``caches/<dataset>-<split>__<config>`` with path-unsafe characters replaced."""
    dataset, model = cfg.images.dataset, cfg.model
    name = dataset.split(":", 1)[0] if ":" in dataset else Path(dataset).name or "dataset"
    config_name, _ = resolve_config(model.sam2_config)
    size = f"@{model.sam2_image_size}" if model.sam2_image_size else ""
    copies, seed = cfg.images.augment_copies, cfg.images.augment_seed
    aug = f"+aug{copies}s{seed}" if copies else ""
    stem = f"{name}-{cfg.split.split}{aug}__{config_name}{size}".replace("/", "_").replace("+", "p")
    return Path("caches") / stem


def _load_dataset(cfg: EmbedConfig) -> Any:
    from gpu_env.datasets import load_dataset

    from gpu_env.datasets.augment import augment

    kw = {"count": cfg.count} if cfg.count is not None else {}
    images = cfg.images
    return augment(load_dataset(images.dataset, split=cfg.split.split, **kw),
                   images.augment_copies, images.augment_seed)


def embed(cfg: EmbedConfig, dataset: Any | None = None,
          notes: list[str] | None = None) -> tuple[Path, CacheMeta]:
    """Build the cache described by ``cfg``; ``dataset`` (a ``SegDataset``-like object with
    ``ids``, ``original_sizes``, ``load_original``) overrides loading ``cfg.images.dataset``.
    ``notes`` collects what was done to an existing cache (see ``encode_to_cache``)."""
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size {cfg.batch_size} must be >= 1")
    out = cfg.out if cfg.out is not None else default_out(cfg)
    check_owned(out)  # a folder that is not a cache is refused before any work
    check_owned(partial_dir(out))
    m = cfg.model
    config_name, _ = resolve_config(m.sam2_config)
    device = cfg.device.resolve()  # before any work: `--device cuda` without CUDA says so
    if m.sam2_checkpoint is None:
        msg = (f"NO --sam2-checkpoint GIVEN: encoding with RANDOM {config_name} weights (seed "
               f"{m.sam2_seed}). The features are meaningless for segmentation; use this only for "
               "tests/benchmarks.")
        warnings.warn(msg, stacklevel=2)
        print(f"\n{'!' * 100}\n{msg}\n{'!' * 100}\n", file=sys.stderr)
    data = dataset if dataset is not None else _load_dataset(cfg)
    # The config as given (a name or a yaml path): resolve_config is the one resolver, and the
    # cache records its canonical name (a yaml path's stem).
    model = build_sam2_model(m, device)
    fingerprint = checkpoint_fingerprint(m.sam2_checkpoint, m.sam2_config, m.sam2_seed,
                                         m.sam2_image_size)
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
        progress=cfg.progress.progress,
        overwrite=cfg.overwrite,
        notes=notes,
        extra_meta={"dataset": getattr(data, "name", cfg.images.dataset),
                    "split": getattr(data, "split", cfg.split.split),
                    "embed_config": resolved},
    )
    return out, meta


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    notes: list[str] = []
    try:
        out, meta = embed(cfg, notes=notes)
    except (ValueError, DiskFullError) as e:  # CacheError, SAM2LoadError, bad flags: say it plainly
        print(f"{command_name('embed')}: error: {e}", file=sys.stderr)
        return 2
    for line in notes:
        print(line)
    print(f"feature cache: {out}")
    print(f"size: {size_report(meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
