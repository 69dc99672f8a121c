"""The one place that turns a ``SegmenterConfig`` into a ``Segmenter``: every command, the
compatibility adapter and the benchmarks build their segmenter (and its SAM2 model) here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sam_batch.config import SAM2ModelConfig, SegmenterConfig
from sam_batch.segmenter import Segmenter

if TYPE_CHECKING:
    from sam_batch.encoder import SAM2Features


def build_sam2_model(cfg: SAM2ModelConfig, device: torch.device) -> torch.nn.Module:
    """The SAM2 model ``cfg`` names: its checkpoint, or (without one) random weights seeded by
    ``cfg.sam2_seed``, at ``cfg.sam2_image_size`` when set."""
    from sam_batch.model import build_sam

    return build_sam(cfg.sam2_config, cfg.sam2_checkpoint, device=device, seed=cfg.sam2_seed,
                     image_size=cfg.sam2_image_size)


def build_segmenter(cfg: SegmenterConfig, images: Tensor, device: torch.device, *,
                    image_ids: Sequence[str] | None = None, split: str = "all",
                    indices: list[int] | None = None,
                    originals: Callable[[], list[np.ndarray]] | None = None,
                    load_original: Callable[[int], np.ndarray] | None = None,
                    model: torch.nn.Module | None = None, features: SAM2Features | None = None,
                    encode_batch_size: int = 8, max_chunk: int | None = None,
                    compile: bool = False, progress: bool = False) -> Segmenter:
    """The configured segmenter over ``images [N, 3, H, W]`` (the dataset's working images).

    ``weightfree``: ``GeodesicSegmenter`` of ``images``. ``sam2``: the batched decoder of
    ``model`` (default: ``build_sam2_model(cfg)``) over the images' SAM2 features: ``features``
    when given (encoded by ``model`` already: the benchmarks encode once per session, or use
    random stand-ins), else read from ``cfg.feature_cache`` (``{split}`` replaced; only rows
    ``indices`` if given; its image ids must equal ``image_ids``, and with ``load_original``
    (``j -> the j-th image at original resolution``) each image's pixels must be those it was
    encoded from) or, without a cache, encoded
    now from ``originals()`` (the original-resolution images); with none of them, a
    ``ValueError`` says how to build the cache. ``max_chunk`` and ``compile`` are the decoder's
    (rows per pass, ``torch.compile`` of its per-chunk pass); the weight-free segmenter has
    neither, so ``compile=True`` with it is refused.
    """
    if cfg.kind == "weightfree":
        if compile:
            raise ValueError("compile=True is a SAM2 decoder setting; the weight-free segmenter "
                             "has no compiled pass (torch.compile its decode yourself)")
        from sam_batch.geodesic import GeodesicSegmenter

        return GeodesicSegmenter(images.to(device))
    if cfg.kind != "sam2":
        raise ValueError(f"segmenter must be 'weightfree' or 'sam2', got {cfg.kind!r}")
    from sam_batch.decoder import BatchedSAM2Decoder

    decoder = {"max_chunk": max_chunk, "compile": compile}
    if features is not None:
        if model is None:
            raise ValueError("features without the model that encoded them: pass model= too")
        return BatchedSAM2Decoder(model, features, **decoder)
    if cfg.feature_cache is None and originals is None:
        raise ValueError(
            "segmenter='sam2' needs --feature-cache: build it first with "
            "`sam2click-embed --dataset ... --out caches/<name>` for each split."
        )
    if model is None:
        model = build_sam2_model(cfg, device)
    if cfg.feature_cache is None:
        from sam_batch.encoder import encode_images

        feats = encode_images(model, originals(), batch_size=encode_batch_size, progress=progress)
        return BatchedSAM2Decoder(model, feats, **decoder)
    from sam_batch.cache import load_cache
    from sam_batch.model import checkpoint_fingerprint

    fingerprint = checkpoint_fingerprint(cfg.sam2_checkpoint, cfg.sam2_config, cfg.sam2_seed,
                                         cfg.sam2_image_size)
    path = cfg.feature_cache.replace("{split}", split)
    if image_ids is not None:
        _check_cache_ids(path, split, image_ids, indices)
    cache = load_cache(path, device, expect_fingerprint=fingerprint, indices=indices,
                       images=load_original)
    return BatchedSAM2Decoder(model, cache, **decoder)


def _check_cache_ids(path: str, split: str, image_ids: Sequence[str],
                     indices: list[int] | None) -> None:
    """Refuse a cache whose images are not the split's, naming the ids added and removed (read
    from ``meta.json`` alone, before any feature is loaded)."""
    from pathlib import Path

    from sam_batch.cache_format import read_meta
    from sam_batch.cache_images import compare_images

    if not (Path(path) / "meta.json").is_file():
        return  # load_cache says what is missing
    cached = read_meta(Path(path)).image_ids
    if indices is not None and all(0 <= i < len(cached) for i in indices):
        cached = [cached[i] for i in indices]  # (bad indices: load_cache names them)
    if list(cached) == list(image_ids):
        return
    changes = compare_images(cached, None, list(image_ids), [""] * len(image_ids))
    what = changes.describe() if changes else "the same images in another order"
    raise ValueError(
        f"feature cache {path!r} holds other images than split {split!r} (the split against the "
        f"cache: {what}). Re-run sam2click-embed for this split with --out {path}: it encodes "
        "only the images the cache lacks.")
