"""What a SAM2 feature cache is on disk: its metadata (``meta.json``), its feature levels and
their storage dtypes, and the loaded form (``FeatureCache``). See ``sam_batch.cache`` for the
layout of a cache directory and how it is written, repaired and loaded."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sam_batch.atomic_io import atomic_write
from sam_batch.cache_files import CacheError, NpyLayout, header_bytes
from sam_batch.encoder import SAM2Features

CACHE_FORMAT_VERSION = 1
LEVELS = ("image_embed", "high_res_0", "high_res_1")
DTYPES: dict[torch.dtype, tuple[str, str]] = {
    torch.float16: ("float16", "float16"),
    torch.bfloat16: ("bfloat16", "uint16"),
}
"""Logical feature dtype -> (its name in ``meta.json``, the numpy dtype it is stored as)."""
TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class CacheMismatchError(CacheError):
    """A valid feature cache that was built with another model/config/size than expected."""


@dataclass
class CacheMeta:
    """Contents of ``meta.json``."""

    format_version: int
    config: str
    fingerprint: str
    image_size: int
    dtype: str
    """Logical feature dtype: ``"float16"`` or ``"bfloat16"``."""
    storage_dtype: str
    """numpy dtype on disk: ``"float16"`` or ``"uint16"`` (bfloat16 bit pattern)."""
    num_images: int
    image_ids: list[str]
    original_sizes: list[list[int]]
    """``[H, W]`` per image."""
    shapes: dict[str, list[int]]
    """Per-image shape of each level (without the leading N)."""
    complete: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (dataset name, split…)."""
    files: dict[str, dict[str, Any]] | None = None
    """Per level file: ``{"bytes": size, "row_crc32": [CRC-32 of each image's row]}``; ``None``
    in caches written before checksums were recorded."""
    batch_size: int | None = None
    """Images per encoder forward when the cache was written. The encoder's float results
    depend on which images share a batch, so a repair re-encodes a damaged image inside the
    same aligned batch ``[i // b * b, ...)`` to write back bit-identical features."""
    image_hashes: list[str] | None = None
    """Content fingerprint of each encoded image (``sam_batch.cache_images.image_hash`` of its
    decoded pixels); ``None`` in caches written before fingerprints were recorded."""

    def __getitem__(self, key: str) -> Any:
        """Dict-style read access (``meta["image_ids"]``), as the parsed ``meta.json``."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    @property
    def bytes_per_image(self) -> int:
        return 2 * sum(math.prod(s) for s in self.shapes.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "CacheMeta":
        d = json.loads(text)
        return cls(**d)


@dataclass
class FeatureCache:
    """A loaded cache: the three feature levels, ``[N, ...]`` half precision, on one device."""

    image_embed: Tensor
    high_res_0: Tensor
    high_res_1: Tensor
    meta: CacheMeta

    @property
    def num_images(self) -> int:
        return int(self.image_embed.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image_embed, self.high_res_0, self.high_res_1))

    @property
    def device(self) -> torch.device:
        return self.image_embed.device

    def features(self) -> SAM2Features:
        return SAM2Features(self.image_embed, self.high_res_0, self.high_res_1)


def partial_dir(out_dir: str | Path) -> Path:
    """Where :func:`encode_to_cache` writes before the cache is complete."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def size_report(meta: CacheMeta) -> str:
    """One line: images, MiB per image, total MiB."""
    per = meta.bytes_per_image / 2**20
    return f"{meta.num_images} images x {per:.2f} MiB/image = {per * meta.num_images:.1f} MiB ({meta.dtype})"


def level_shape(meta: CacheMeta, k: str) -> tuple[int, ...]:
    """Shape ``[N, ...]`` of level ``k``'s file."""
    return (meta.num_images, *meta.shapes[k])


JOB_KEYS = (("format_version", "cache format"), ("config", "SAM2 config"),
            ("fingerprint", "SAM2 weights"), ("image_size", "SAM2 image size"),
            ("dtype", "feature dtype (--dtype)"), ("storage_dtype", "storage dtype"),
            ("shapes", "feature shapes"))
"""What makes a cache the product of one model: ``(meta field, words for a person)``."""
PROVENANCE_KEYS = (("dataset", "dataset"), ("split", "split (--split)"),
                   ("augment_copies", "augmented copies (--augment-copies)"),
                   ("augment_seed", "augmentation seed (--augment-seed)"))
"""What makes a cache the product of one dataset, as ``sam2click-embed`` records it in
``meta.extra`` (compared only when both caches record it)."""


def _weights(fingerprint: str, extra: dict[str, Any]) -> str:
    if fingerprint.startswith("random:"):
        seed = fingerprint.split(":")[2] if fingerprint.count(":") >= 3 else "?"
        return f"RANDOM weights (seed {seed})"
    path = (extra.get("embed_config") or {}).get("sam2_checkpoint")
    return f"checkpoint {path} ({fingerprint[:19]}...)" if path else f"checkpoint {fingerprint[:19]}..."


def _provenance(meta: CacheMeta, key: str) -> Any:
    if key in meta.extra and key in ("dataset", "split"):
        return meta.extra[key]
    return (meta.extra.get("embed_config") or {}).get(key)


def job_differences(old: CacheMeta, new: CacheMeta) -> list[str]:
    """What tells the cache ``old`` apart from the job ``new`` (model, dtype, dataset, split,
    augmentation), one phrase each; empty when ``new`` would build the same cache (its images
    may still differ: see ``sam_batch.cache_images``)."""
    out = []
    for key, words in JOB_KEYS:
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            if key == "fingerprint":
                a, b = _weights(a, old.extra), _weights(b, new.extra)
            out.append(f"{words}: {a} in the cache, {b} now")
    for key, words in PROVENANCE_KEYS:
        a, b = _provenance(old, key), _provenance(new, key)
        if a is not None and b is not None and a != b:
            out.append(f"{words}: {a!r} in the cache, {b!r} now")
    return out


def same_job(a: CacheMeta, b: CacheMeta) -> bool:
    """Whether two caches hold the same images (by id) encoded by the same model at the same
    dtype, from the same dataset."""
    return not job_differences(a, b) and a.num_images == b.num_images and a.image_ids == b.image_ids


def repair_hint(d: Path) -> str:
    """What to do about a damaged cache ``d``."""
    return (f"re-run `sam2click-embed` with the arguments that built {d.name} (its meta.json "
            "records them under extra.embed_config): it re-encodes only the damaged images")


def file_records(meta: CacheMeta, crcs: np.ndarray) -> dict[str, dict[str, Any]]:
    """``meta.files``: each level file's size and its rows' CRC-32s (``crcs [N, levels]``)."""
    dtype = np.dtype(meta.storage_dtype)
    out = {}
    for j, k in enumerate(LEVELS):
        shape = level_shape(meta, k)
        out[f"{k}.npy"] = {"bytes": NpyLayout(len(header_bytes(shape, dtype)), shape, dtype).nbytes,
                           "row_crc32": [int(c) for c in crcs[:, j]]}
    return out


def to_storage(x: Tensor, dtype: torch.dtype) -> np.ndarray:
    """Features as the numpy array stored on disk (bfloat16 as its ``uint16`` bits)."""
    x = x.to(dtype).cpu()
    if dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16)
    return x.numpy()


def from_storage(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    """Stored rows back as a host tensor of the logical ``dtype``."""
    a = np.array(a, copy=True)  # off the read-only memmap into a writable host buffer
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def read_meta(d: Path) -> CacheMeta:
    """``d/meta.json``; a missing or unreadable one is a ``CacheError`` saying what to do."""
    f = d / "meta.json"
    if not f.is_file():
        raise CacheError(f"{d} is not a feature cache: {f.name} is missing. Build it with "
                         "`sam2click-embed --out DIR`.")
    try:
        return CacheMeta.from_json(f.read_text())
    except (json.JSONDecodeError, TypeError) as e:
        raise CacheError(f"{f} is unreadable ({e}); rebuild the cache with "
                         f"`sam2click-embed --out {d} --overwrite`") from e


def write_meta(d: Path, meta: CacheMeta) -> None:
    """Replace ``d/meta.json`` atomically."""
    atomic_write(d / "meta.json", lambda f: f.write(meta.to_json()), what="cache metadata")
