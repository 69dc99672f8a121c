"""The on-disk SAM2 feature cache: one directory per (dataset, model).

Layout of a finished cache ``<dir>/``::

    meta.json          format version, config, checkpoint fingerprint, image size, dtype, ids,
                       original sizes, per-level shapes, ``complete: true``
    image_embed.npy    [N, 256, 64, 64]   (1024 model)
    high_res_0.npy     [N, 32, 256, 256]
    high_res_1.npy     [N, 64, 128, 128]
    done.npy           [N] bool, all true

``meta.json`` also records each level file's size in bytes and a CRC-32 per image row
(``files``); loading checks both and names a damaged file with the images it damages, and
re-running the encoding over a damaged cache re-encodes only those images, in place (see
``sam_batch.cache_files``). Caches written before checksums existed still load (sizes and
headers are checked; a log line says checksums are absent) and re-running the encoding over one
records its checksums without re-encoding.

Features are half precision: float16 is stored as ``float16``; bfloat16 as its ``uint16`` bit
pattern (numpy has no bfloat16), the logical dtype being recorded in ``meta.json``. Nothing is
pickled: arrays are plain ``.npy`` read with ``allow_pickle=False``.

Writing is resumable and atomic: everything goes to ``<dir>.partial/``, whose level files are
created at full size up front (a disk too small fails before any encoding) and filled with
ordinary ``pwrite`` calls, never a writable memory map (a full disk is a ``DiskFullError``
naming the file, not a ``SIGBUS``). After each batch the rows are fsynced *before* the per-image
``done.npy`` mask is replaced, so a crash leaves at worst a finished batch not marked done. A finished ``.partial`` is renamed onto
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

from sam_batch.atomic_io import DiskFullError, atomic_write
from sam_batch.cache_files import (CacheError, FileDamage, NpyLayout, RowWriter, create_row_file,
                                   extend_row_file,
                                   header_bytes, npy_layout, read_rows, row_crc32, scan_rows)
from sam_batch.encoder import SAM2Features, encode_batch, feature_shapes, preprocess

__all__ = [
    "CACHE_FORMAT_VERSION",
    "LEVELS",
    "CacheError",
    "CacheMeta",
    "CacheMismatchError",
    "FeatureCache",
    "encode_to_cache",
    "find_damage",
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


def _repair_hint(d: Path) -> str:
    return (f"re-run `python -m scripts.embed` with the arguments that built {d.name}: it "
            "re-encodes only the damaged images (or delete the cache and build it again)")


def _level_shape(meta: CacheMeta, k: str) -> tuple[int, ...]:
    return (meta.num_images, *meta.shapes[k])


def _open_partial(part: Path, meta: CacheMeta) -> tuple[dict[str, RowWriter], np.ndarray, np.ndarray, np.ndarray]:
    """Row writers, done mask, original sizes and row CRCs ``[N, levels]`` of ``part``: resumed
    when it holds the same job, otherwise (re)created from scratch."""
    n = meta.num_images
    dtype = np.dtype(meta.storage_dtype)
    if part.is_dir():
        try:
            old = _read_meta(part)
            if not _same_job(old, meta):
                raise CacheError("different job")
            layouts = {k: npy_layout(part / f"{k}.npy", _level_shape(meta, k), dtype, what="")
                       for k in LEVELS}
            done = np.load(part / "done.npy", allow_pickle=False)
            sizes = np.load(part / "sizes.npy", allow_pickle=False)
            if done.shape != (n,) or done.dtype != np.bool_ or sizes.shape != (n, 2):
                raise CacheError("done.npy/sizes.npy have the wrong shape")
            crc_f = part / "checksums.npy"
            if crc_f.is_file():
                crcs = np.load(crc_f, allow_pickle=False)
                if crcs.shape != (n, len(LEVELS)) or crcs.dtype != np.uint32:
                    raise CacheError("checksums.npy has the wrong shape")
            else:  # a partial cache from before checksums: checksum what is marked done
                crcs = np.zeros((n, len(LEVELS)), np.uint32)
                rows = np.flatnonzero(done)
                for j, k in enumerate(LEVELS):
                    if rows.size:
                        crcs[rows, j] = row_crc32(read_rows(part / f"{k}.npy", layouts[k])[rows])
            log.info("resuming %s: %d of %d images already encoded", part, int(done.sum()), n)
            writers = {k: RowWriter(part / f"{k}.npy", layouts[k]) for k in LEVELS}
            return writers, done.copy(), sizes.copy(), crcs.copy()
        except (CacheError, OSError, ValueError) as e:
            log.warning("discarding unusable partial cache %s (%s); starting over", part, e)
            shutil.rmtree(part)
    part.mkdir(parents=True)
    _write_text_atomic(part / "meta.json", meta.to_json())
    writers = {}
    for k in LEVELS:
        shape = _level_shape(meta, k)
        create_row_file(part / f"{k}.npy", shape, dtype)
        writers[k] = RowWriter(part / f"{k}.npy", NpyLayout(len(header_bytes(shape, dtype)), shape, dtype))
    done = np.zeros(n, dtype=np.bool_)
    sizes = np.zeros((n, 2), dtype=np.int64)
    crcs = np.zeros((n, len(LEVELS)), np.uint32)
    _save_npy_atomic(part / "sizes.npy", sizes)
    _save_npy_atomic(part / "checksums.npy", crcs)
    _save_npy_atomic(part / "done.npy", done)
    return writers, done, sizes, crcs


def _file_records(meta: CacheMeta, crcs: np.ndarray) -> dict[str, dict[str, Any]]:
    dtype = np.dtype(meta.storage_dtype)
    out = {}
    for j, k in enumerate(LEVELS):
        shape = _level_shape(meta, k)
        out[f"{k}.npy"] = {"bytes": NpyLayout(len(header_bytes(shape, dtype)), shape, dtype).nbytes,
                           "row_crc32": [int(c) for c in crcs[:, j]]}
    return out


def find_damage(path: str | Path, meta: CacheMeta | None = None) -> dict[str, FileDamage]:
    """Check every level file of the finished cache at ``path`` against ``meta.json``: header,
    size and (when recorded) each image row's CRC-32. Returns ``{level: FileDamage}`` for the
    damaged files only (empty when the cache is sound). Reads every byte once."""
    d = Path(path)
    meta = _read_meta(d) if meta is None else meta
    dtype = np.dtype(meta.storage_dtype)
    out = {}
    for k in LEVELS:
        f = d / f"{k}.npy"
        rec = (meta.files or {}).get(f.name)
        try:
            layout = npy_layout(f, _level_shape(meta, k), dtype, what="")
        except CacheError as e:
            out[k] = FileDamage(str(e).rstrip("; "), np.arange(meta.num_images), rebuild=True)
            continue
        if rec is None:
            continue
        if rec["bytes"] != layout.nbytes:
            out[k] = FileDamage(f"{f} is {layout.nbytes} bytes, meta.json recorded {rec['bytes']}",
                                np.arange(meta.num_images), rebuild=True)
            continue
        bad = scan_rows(f, layout, np.asarray(rec["row_crc32"], np.uint32))
        if bad.size:
            out[k] = FileDamage(f"{f}: {bad.size} image row(s) fail their CRC-32 check", bad)
    return out


def _truncated_layout(f: Path, shape: tuple[int, ...], dtype: np.dtype) -> NpyLayout | None:
    """The layout of ``f`` when its header is right and only its size is off (truncated or
    padded): its intact leading rows can be kept."""
    try:
        with open(f, "rb") as fh:
            head = fh.read(len(header_bytes(shape, dtype)))
    except OSError:
        return None
    want = header_bytes(shape, dtype)
    return NpyLayout(len(want), shape, dtype) if head == want else None


def _repair(model: torch.nn.Module, load: Callable[[int], np.ndarray], out_dir: Path, meta: CacheMeta,
            damage: dict[str, FileDamage], batch_size: int, dtype: torch.dtype, progress: bool,
            on_batch: Callable[[int, list[int]], None] | None) -> CacheMeta:
    """Re-encode, in place, only the images that ``damage`` lists, and rewrite only the damaged
    files' rows. Sound files are never written. A crash midway leaves rows that fail their
    CRC, so the next run repairs them again."""
    from tqdm.auto import tqdm

    sdtype = np.dtype(meta.storage_dtype)
    crcs = np.stack([np.asarray(meta.files[f"{k}.npy"]["row_crc32"], np.uint32) for k in LEVELS], 1)
    writers: dict[str, RowWriter] = {}
    for k, dmg in damage.items():
        f = out_dir / f"{k}.npy"
        shape = _level_shape(meta, k)
        layout = _truncated_layout(f, shape, sdtype) if dmg.rebuild else None
        if layout is not None:  # keep the intact rows of a truncated file; extend it
            extend_row_file(f, layout)
            dmg.rows = scan_rows(f, layout, crcs[:, LEVELS.index(k)])
        elif dmg.rebuild:
            create_row_file(f, shape, sdtype)
            layout = NpyLayout(len(header_bytes(shape, sdtype)), shape, sdtype)
        else:
            layout = npy_layout(f, shape, sdtype, what="")
        writers[k] = RowWriter(f, layout)
    bad = {k: set(d.rows.tolist()) for k, d in damage.items()}
    bs = meta.batch_size or batch_size
    chunks = sorted({i // bs for rows in bad.values() for i in rows})
    batches = [list(range(c * bs, min((c + 1) * bs, meta.num_images))) for c in chunks]
    device = next(model.parameters()).device
    bar = tqdm(total=sum(map(len, batches)), desc=f"repairing {out_dir.name}", unit="img",
               disable=not progress)
    try:
        for b, idx in enumerate(batches):
            # The whole aligned batch is encoded (features depend on batch mates); only the
            # damaged rows are written.
            feats = encode_batch(model, torch.stack([preprocess(load(i), meta.image_size) for i in idx]).to(device))
            for k, t in zip(LEVELS, feats):
                rows = [i for i in idx if i in bad.get(k, ())]
                if not rows:
                    continue
                arr = _to_storage(t, dtype)[[idx.index(i) for i in rows]]
                if not np.array_equal(row_crc32(arr), crcs[rows, LEVELS.index(k)]):
                    log.warning("re-encoded rows of %s.npy differ from their recorded checksums "
                                "(another device or library version?); recording the new ones", k)
                    crcs[rows, LEVELS.index(k)] = row_crc32(arr)
                writers[k].write(rows, arr)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(b, list(idx))
        for w in writers.values():
            w.sync()
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    meta.files = _file_records(meta, crcs)
    _write_text_atomic(out_dir / "meta.json", meta.to_json())
    return meta


def _add_checksums(out_dir: Path, meta: CacheMeta) -> CacheMeta:
    """Record the size and row CRCs of a cache written before checksums existed (its files
    passed the header and size checks; their current bytes are trusted)."""
    sdtype = np.dtype(meta.storage_dtype)
    crcs = np.zeros((meta.num_images, len(LEVELS)), np.uint32)
    for j, k in enumerate(LEVELS):
        layout = npy_layout(out_dir / f"{k}.npy", _level_shape(meta, k), sdtype, what="")
        a = read_rows(out_dir / f"{k}.npy", layout)
        for s in range(0, meta.num_images, 16):
            crcs[s : s + 16, j] = row_crc32(a[s : s + 16])
        del a
    meta.files = _file_records(meta, crcs)
    _write_text_atomic(out_dir / "meta.json", meta.to_json())
    log.info("%s: recorded the checksums of a cache written without them", out_dir)
    return meta


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
        (same ids, model, dtype); by default that cache is verified (see :func:`find_damage`),
        only its damaged images are re-encoded, in place, and its metadata returned.

    Raises:
      DiskFullError: the disk filled up; the message names the file, says that the previous
        cache at ``out_dir`` (if any) is untouched, and that re-running resumes the work.

    Returns the metadata of the finished cache.
    """
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
            damage = find_damage(out_dir, old)
            if not damage:
                if old.files is None:
                    return _with_disk_note(lambda: _add_checksums(out_dir, old), out_dir, part)
                log.info("%s already holds this cache and it is sound; nothing to do "
                         "(overwrite=True re-encodes)", out_dir)
                return old
            for k, dmg in damage.items():
                log.warning("%s: re-encoding %d image(s): %s", out_dir, dmg.rows.size, dmg.reason)
            if old.files is None:  # no checksums to tell good rows from bad: rebuild it all
                log.warning("%s has no checksums (written by an older version); re-encoding "
                            "every image", out_dir)
            else:
                return _with_disk_note(
                    lambda: _repair(model, load, out_dir, old, damage, batch_size, dtype, progress,
                                    on_batch), out_dir, part, repairing=True)
    return _with_disk_note(lambda: _encode_partial(model, load, ids, out_dir, part, meta, original_sizes,
                                                   batch_size, dtype, progress, on_batch), out_dir, part)


def _with_disk_note(work: Callable[[], CacheMeta], out_dir: Path, part: Path,
                    repairing: bool = False) -> CacheMeta:
    """Run ``work``; a full disk becomes a :class:`DiskFullError` that also says what happened
    to the cache and how to go on."""
    try:
        return work()
    except DiskFullError as e:
        state = (f"the damaged rows of {out_dir} are still damaged and the sound ones untouched"
                 if repairing else
                 f"the previous cache at {out_dir}, if any, is intact; the work done so far is "
                 f"kept in {part}")
        raise DiskFullError(e.errno, f"{e.strerror} While encoding the feature cache: {state}. "
                                     "Re-running the same command resumes.") from e


def _encode_partial(model: torch.nn.Module, load: Callable[[int], np.ndarray], ids: list[str], out_dir: Path,
                    part: Path, meta: CacheMeta, original_sizes: Sequence[tuple[int, int]] | None,
                    batch_size: int, dtype: torch.dtype, progress: bool,
                    on_batch: Callable[[int, list[int]], None] | None) -> CacheMeta:
    from tqdm.auto import tqdm

    n = meta.num_images
    maps, done, sizes, crcs = _open_partial(part, meta)
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
            for j, (k, t) in enumerate(zip(LEVELS, feats)):
                arr = _to_storage(t, dtype)
                maps[k].write(idx, arr)
                crcs[idx, j] = row_crc32(arr)
            for w in maps.values():
                w.sync()
            # Features are on disk before the mask says so: a crash never marks garbage done.
            done[idx] = True
            _save_npy_atomic(part / "sizes.npy", sizes)
            _save_npy_atomic(part / "checksums.npy", crcs)
            _save_npy_atomic(part / "done.npy", done)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(b, list(idx))
    finally:
        bar.close()
        for w in maps.values():
            w.close()

    meta.original_sizes = sizes.tolist()
    meta.files = _file_records(meta, crcs)
    meta.batch_size = batch_size
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
    verify: bool = True,
) -> FeatureCache:
    """Load a finished cache onto ``device`` (copied in chunks of ``chunk`` images, so host
    memory stays bounded), refusing incomplete caches and, when asked, caches built with
    another config / checkpoint fingerprint / image size.

    ``indices``: load only these images, in this order (e.g. one process's shard of a
    multi-process run). The ``.npy`` files are memory-mapped, so only those images' rows are
    read from disk and only they reach ``device``; the returned ``meta`` then describes the
    subset (its ``num_images``, ``image_ids`` and ``original_sizes``).

    Every level file's header and size are checked before it is mapped, and (``verify``, the
    default) each loaded image row's CRC-32 against ``meta.json`` as it is copied (~2 GB/s);
    a damaged file raises :class:`CacheError` naming it and the damaged images."""
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
    hint = _repair_hint(d)
    layouts, problems = {}, []
    for k in LEVELS:
        f = d / f"{k}.npy"
        try:
            layouts[k] = npy_layout(f, _level_shape(meta, k), np.dtype(meta.storage_dtype), what=hint)
        except CacheError as e:
            problems.append(str(e))
            continue
        rec = (meta.files or {}).get(f.name)
        if rec is not None and rec["bytes"] != layouts[k].nbytes:
            problems.append(f"{f} is {layouts[k].nbytes} bytes, meta.json recorded {rec['bytes']}; {hint}")
    if problems:
        raise CacheError(f"feature cache {d} is damaged:\n  " + "\n  ".join(problems))
    if meta.files is None:
        log.warning("%s has no checksums (written by an older version): only sizes and headers "
                    "were checked. Re-run `python -m scripts.embed` over it to record them.", d)
    out, bad_rows = [], {}
    for k in LEVELS:
        f = d / f"{k}.npy"
        a = read_rows(f, layouts[k])
        n = a.shape[0] if rows is None else len(rows)
        want = None
        if verify and meta.files is not None:
            want = np.asarray(meta.files[f.name]["row_crc32"], np.uint32)
        t = torch.empty((n, *a.shape[1:]), dtype=dtype, device=device)
        for s in range(0, n, chunk):
            # Fancy indexing a memmap reads just the listed images' rows from disk.
            sel = np.arange(s, min(s + chunk, n)) if rows is None else rows[s : s + chunk]
            part = a[s : s + chunk] if rows is None else a[sel]
            if want is not None:
                bad = sel[row_crc32(part) != want[sel]]
                if bad.size:
                    bad_rows.setdefault(f.name, []).extend(bad.tolist())
            t[s : s + chunk].copy_(_from_storage(part, dtype))
        out.append(t)
        del a
    if bad_rows:
        lines = [f"{d / name}: image(s) {_name_rows(meta, r)} fail their CRC-32 check"
                 for name, r in bad_rows.items()]
        raise CacheError(f"feature cache {d} is damaged:\n  " + "\n  ".join(lines) + f"\n{hint}")
    if rows is not None:
        meta = replace(meta, num_images=len(rows), image_ids=[meta.image_ids[i] for i in rows],
                       original_sizes=[meta.original_sizes[i] for i in rows])
    return FeatureCache(out[0], out[1], out[2], meta)


def _name_rows(meta: CacheMeta, rows: list[int], most: int = 5) -> str:
    names = ", ".join(repr(meta.image_ids[i]) for i in rows[:most])
    return names + (f" and {len(rows) - most} more" if len(rows) > most else "")


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
