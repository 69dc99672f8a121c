"""The on-disk SAM2 feature cache: one directory per (dataset, model).

Layout of a finished cache ``<dir>/``::

    meta.json          format version, config, checkpoint fingerprint, image size, dtype, ids,
                       original sizes, per-level shapes, ``complete: true``
    image_embed.npy    [N, 256, 64, 64]   (1024 model)
    high_res_0.npy     [N, 32, 256, 256]
    high_res_1.npy     [N, 64, 128, 128]
    done.npy           [N] bool, all true

Features are half precision: float16 is stored as ``float16``; bfloat16 as its ``uint16`` bit
pattern (numpy has no bfloat16), the logical dtype being recorded in ``meta.json``. Nothing is
pickled: arrays are plain ``.npy`` read with ``allow_pickle=False``.

Writing is resumable and atomic: everything goes to ``<dir>.partial/``; after each batch the
feature memmaps are flushed *before* the per-image ``done.npy`` mask is replaced, so a crash
leaves at worst a finished batch not marked done. A finished ``.partial`` is renamed onto
``<dir>`` (an existing ``<dir>`` is renamed away first and deleted last). Only a directory whose
``meta.json`` says ``complete`` and whose name is not ``*.partial`` loads.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sam_batch.atomic_io import atomic_write
from sam_batch.encoder import SAM2Features, encode_batch, feature_shapes, preprocess

__all__ = [
    "CACHE_FORMAT_VERSION",
    "LEVELS",
    "CacheError",
    "CacheMeta",
    "CacheMismatchError",
    "FeatureCache",
    "encode_to_cache",
    "load_cache",
    "partial_dir",
    "size_report",
]

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
LEVELS = ("image_embed", "high_res_0", "high_res_1")
_DTYPES: dict[torch.dtype, tuple[str, str]] = {
    torch.float16: ("float16", "float16"),
    torch.bfloat16: ("bfloat16", "uint16"),
}
_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class CacheError(ValueError):
    """A feature cache is missing, incomplete or corrupt (the message says what to do)."""


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


# --------------------------------------------------------------------------------------------
# Small file helpers
# --------------------------------------------------------------------------------------------


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), what="cache metadata")


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False), binary=True,
                 what="cache file")


def _to_storage(x: Tensor, dtype: torch.dtype) -> np.ndarray:
    x = x.to(dtype).cpu()
    if dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16)
    return x.numpy()


def _from_storage(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    a = np.array(a, copy=True)  # off the read-only memmap into a writable host buffer
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _read_meta(d: Path) -> CacheMeta:
    f = d / "meta.json"
    if not f.is_file():
        raise CacheError(f"{d} is not a feature cache: {f.name} is missing. Build it with "
                         "`python -m scripts.embed` (or sam_batch.cache.encode_to_cache).")
    try:
        return CacheMeta.from_json(f.read_text())
    except (json.JSONDecodeError, TypeError) as e:
        raise CacheError(f"{f} is unreadable ({e}); delete {d} and rebuild the cache") from e


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _same_job(a: CacheMeta, b: CacheMeta) -> bool:
    keys = ("format_version", "config", "fingerprint", "image_size", "dtype", "storage_dtype",
            "num_images", "image_ids", "shapes")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _open_partial(part: Path, meta: CacheMeta) -> tuple[dict[str, np.memmap], np.ndarray, np.ndarray]:
    """Memmaps, done mask and original sizes of ``part``: resumed when it holds the same job,
    otherwise (re)created from scratch."""
    n = meta.num_images
    if part.is_dir():
        try:
            old = _read_meta(part)
            if not _same_job(old, meta):
                raise CacheError("different job")
            maps = {k: np.lib.format.open_memmap(part / f"{k}.npy", mode="r+") for k in LEVELS}
            for k in LEVELS:
                if maps[k].shape != (n, *meta.shapes[k]) or maps[k].dtype != np.dtype(meta.storage_dtype):
                    raise CacheError(f"{k}.npy has the wrong shape/dtype")
            done = np.load(part / "done.npy", allow_pickle=False)
            sizes = np.load(part / "sizes.npy", allow_pickle=False)
            if done.shape != (n,) or done.dtype != np.bool_ or sizes.shape != (n, 2):
                raise CacheError("done.npy/sizes.npy have the wrong shape")
            log.info("resuming %s: %d of %d images already encoded", part, int(done.sum()), n)
            return maps, done.copy(), sizes.copy()
        except (CacheError, OSError, ValueError) as e:
            log.warning("discarding unusable partial cache %s (%s); starting over", part, e)
            shutil.rmtree(part)
    part.mkdir(parents=True)
    _write_text_atomic(part / "meta.json", meta.to_json())
    maps = {
        k: np.lib.format.open_memmap(part / f"{k}.npy", mode="w+", dtype=np.dtype(meta.storage_dtype),
                                     shape=(n, *meta.shapes[k]))
        for k in LEVELS
    }
    done = np.zeros(n, dtype=np.bool_)
    sizes = np.zeros((n, 2), dtype=np.int64)
    _save_npy_atomic(part / "sizes.npy", sizes)
    _save_npy_atomic(part / "done.npy", done)
    return maps, done, sizes


def _swap_in(part: Path, out_dir: Path) -> None:
    """Rename the finished ``part`` onto ``out_dir``; an existing ``out_dir`` is renamed away
    first and deleted only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f"{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
    os.rename(part, out_dir)
    if old is not None:
        shutil.rmtree(old)


def encode_to_cache(
    model: torch.nn.Module,
    images: Sequence[np.ndarray] | Iterable[np.ndarray] | Callable[[int], np.ndarray],
    ids: Sequence[str],
    out_dir: str | Path,
    *,
    config_name: str,
    fingerprint: str,
    original_sizes: Sequence[tuple[int, int]] | None = None,
    batch_size: int = 4,
    dtype: torch.dtype = torch.float16,
    progress: bool = True,
    on_batch: Callable[[int, list[int]], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> CacheMeta:
    """Encode every image with SAM2 into the cache directory ``out_dir`` (resumable, atomic).

    Args:
      model: a SAM2Base (eval), on the device to encode with.
      images: ``HxWx3`` uint8 RGB arrays, as a sequence, a loader ``i -> array`` or any
        iterable (materialised into a list first).
      ids: one id per image; their number fixes N.
      out_dir: the final cache directory (work happens in ``<out_dir>.partial``).
      config_name, fingerprint: the model identity recorded in ``meta.json`` (see
        ``sam_batch.model.checkpoint_fingerprint``); a cache from another model is refused on load.
      original_sizes: optional ``(H, W)`` per image, checked against the images.
      batch_size: images per encoder forward.
      dtype: ``torch.float16`` or ``torch.bfloat16`` storage.
      progress: show a tqdm bar.
      on_batch: called as ``on_batch(batch_number, indices)`` after each batch is on disk.
      extra_meta: free-form provenance stored in ``meta.json``.
      overwrite: re-encode even when ``out_dir`` already holds a complete cache of the same job
        (same ids, model, dtype); by default that cache is kept and its metadata returned.

    Returns the metadata of the finished cache.
    """
    from tqdm.auto import tqdm

    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype} is not a cache dtype; use torch.float16 or torch.bfloat16")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    ids = [str(i) for i in ids]
    n = len(ids)
    if n == 0:
        raise ValueError("no images to encode (ids is empty)")
    if len(set(ids)) != n:
        raise ValueError("image ids must be unique")
    if not callable(images) and not isinstance(images, Sequence):
        images = list(images)  # a one-shot iterable cannot be resumed by index
    load: Callable[[int], np.ndarray] = images if callable(images) else images.__getitem__
    if not callable(images) and len(images) != n:
        raise ValueError(f"{len(images)} images but {n} ids")
    if original_sizes is not None and len(original_sizes) != n:
        raise ValueError(f"{len(original_sizes)} original_sizes but {n} ids")

    out_dir = Path(out_dir)
    part = partial_dir(out_dir)
    name, storage = _DTYPES[dtype]
    shapes = dict(zip(LEVELS, (list(s) for s in feature_shapes(model))))
    meta = CacheMeta(
        format_version=CACHE_FORMAT_VERSION, config=config_name, fingerprint=fingerprint,
        image_size=int(model.image_size), dtype=name, storage_dtype=storage, num_images=n,
        image_ids=ids, original_sizes=[], shapes=shapes, complete=False, extra=dict(extra_meta or {}),
    )
    if not overwrite and (out_dir / "meta.json").is_file():
        try:
            old = _read_meta(out_dir)
        except CacheError:
            old = None
        if old is not None and old.complete and _same_job(old, meta):
            log.info("%s already holds this cache; nothing to do (overwrite=True re-encodes)", out_dir)
            return old
    maps, done, sizes = _open_partial(part, meta)
    device = next(model.parameters()).device
    todo = np.flatnonzero(~done).tolist()
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = tqdm(total=n, initial=int(done.sum()), desc=f"encoding -> {out_dir.name}", unit="img",
               disable=not progress)
    try:
        for b, idx in enumerate(batches):
            inputs = []
            for i in idx:
                img = load(i)
                if original_sizes is not None and tuple(img.shape[:2]) != tuple(original_sizes[i]):
                    raise ValueError(f"image {ids[i]!r} is {img.shape[:2]} but original_sizes says "
                                     f"{tuple(original_sizes[i])}")
                sizes[i] = img.shape[:2]
                inputs.append(preprocess(img, meta.image_size))
            feats = encode_batch(model, torch.stack(inputs).to(device))
            for k, t in zip(LEVELS, feats):
                maps[k][idx] = _to_storage(t, dtype)
                maps[k].flush()
            # Features are on disk before the mask says so: a crash never marks garbage done.
            done[idx] = True
            _save_npy_atomic(part / "sizes.npy", sizes)
            _save_npy_atomic(part / "done.npy", done)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(b, list(idx))
    finally:
        bar.close()
        del maps

    meta.original_sizes = sizes.tolist()
    meta.complete = True
    _write_text_atomic(part / "meta.json", meta.to_json())
    _swap_in(part, out_dir)
    return meta


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_cache(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    expect_config: str | None = None,
    expect_fingerprint: str | None = None,
    expect_image_size: int | None = None,
    chunk: int = 64,
    indices: Sequence[int] | None = None,
) -> FeatureCache:
    """Load a finished cache onto ``device`` (copied in chunks of ``chunk`` images, so host
    memory stays bounded), refusing incomplete caches and, when asked, caches built with
    another config / checkpoint fingerprint / image size.

    ``indices``: load only these images, in this order (e.g. one process's shard of a
    multi-process run). The ``.npy`` files are memory-mapped, so only those images' rows are
    read from disk and only they reach ``device``; the returned ``meta`` then describes the
    subset (its ``num_images``, ``image_ids`` and ``original_sizes``)."""
    d = Path(path)
    if d.name.endswith(".partial"):
        raise CacheError(f"{d} is an unfinished cache (.partial); re-run the encoding to finish it")
    if not d.is_dir():
        hint = " (an unfinished run left " + str(partial_dir(d)) + "; re-run to finish it)" if partial_dir(d).is_dir() else ""
        raise CacheError(f"feature cache {d} does not exist{hint}; build it with `python -m scripts.embed`")
    meta = _read_meta(d)
    if not meta.complete:
        raise CacheError(f"{d} is incomplete (meta.json complete=false); re-run the encoding")
    if meta.format_version != CACHE_FORMAT_VERSION:
        raise CacheError(f"{d} has cache format {meta.format_version}, this code reads "
                         f"{CACHE_FORMAT_VERSION}; rebuild the cache")
    checks = (("config", expect_config, meta.config), ("fingerprint", expect_fingerprint, meta.fingerprint),
              ("image_size", expect_image_size, meta.image_size))
    for what, want, have in checks:
        if want is not None and want != have:
            raise CacheMismatchError(
                f"feature cache {d} was built with {what}={have!r}, but {want!r} was expected; "
                "rebuild the cache for this model (python -m scripts.embed) or load the model it was built with"
            )
    done_f = d / "done.npy"
    if not done_f.is_file() or not bool(np.load(done_f, allow_pickle=False).all()):
        raise CacheError(f"{d} has images not marked done in done.npy; rebuild the cache")
    rows = _check_indices(indices, meta.num_images, d)
    dtype = _TORCH_DTYPES[meta.dtype]
    out = []
    for k in LEVELS:
        f = d / f"{k}.npy"
        if not f.is_file():
            raise CacheError(f"{d} is missing {f.name}; rebuild the cache")
        a = np.load(f, mmap_mode="r", allow_pickle=False)
        if a.shape != (meta.num_images, *meta.shapes[k]) or a.dtype != np.dtype(meta.storage_dtype):
            raise CacheError(f"{f} has shape {a.shape} {a.dtype}, meta.json says "
                             f"{(meta.num_images, *meta.shapes[k])} {meta.storage_dtype}; rebuild the cache")
        n = a.shape[0] if rows is None else len(rows)
        t = torch.empty((n, *a.shape[1:]), dtype=dtype, device=device)
        for s in range(0, n, chunk):
            # Fancy indexing a memmap reads just the listed images' rows from disk.
            part = a[s : s + chunk] if rows is None else a[rows[s : s + chunk]]
            t[s : s + chunk].copy_(_from_storage(part, dtype))
        out.append(t)
        del a
    if rows is not None:
        meta = replace(meta, num_images=len(rows), image_ids=[meta.image_ids[i] for i in rows],
                       original_sizes=[meta.original_sizes[i] for i in rows])
    return FeatureCache(out[0], out[1], out[2], meta)


def _check_indices(indices: Sequence[int] | None, n: int, d: Path) -> np.ndarray | None:
    if indices is None:
        return None
    rows = np.asarray([int(i) for i in indices], dtype=np.int64)
    if rows.size == 0 or rows.min() < 0 or rows.max() >= n or np.unique(rows).size != rows.size:
        raise CacheError(
            f"indices for {d} must be unique image indices in [0, {n}); got {rows.size} indices "
            f"(min {rows.min() if rows.size else None}, max {rows.max() if rows.size else None}). "
            "Pass the positions of the wanted images in the cache's image_ids."
        )
    return rows
