"""Encoding images into a feature cache: resumable (``<dir>.partial`` keeps finished batches)
and atomic (the finished cache is renamed into place). See ``sam_batch.cache`` for the layout."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam_batch.atomic_io import DiskFullError, atomic_write
from sam_batch.cache_files import (CacheError, NpyLayout, RowWriter, create_row_file,
                                   header_bytes, npy_layout, read_rows, row_crc32)
from sam_batch.cache_format import (CACHE_FORMAT_VERSION, DTYPES, LEVELS, CacheMeta, file_records,
                                    level_shape, partial_dir, read_meta, same_job, to_storage,
                                    write_meta)
from sam_batch.cache_repair import add_checksums, find_damage, repair
from sam_batch.encoder import encode_batch, feature_shapes, preprocess

log = logging.getLogger("sam_batch.cache")  # the cache's one logger, whichever file logs


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False), binary=True,
                 what="cache file")


def _open_partial(part: Path, meta: CacheMeta) -> tuple[dict[str, RowWriter], np.ndarray, np.ndarray, np.ndarray]:
    """Row writers, done mask, original sizes and row CRCs ``[N, levels]`` of ``part``: resumed
    when it holds the same job, otherwise (re)created from scratch."""
    n = meta.num_images
    dtype = np.dtype(meta.storage_dtype)
    if part.is_dir():
        try:
            old = read_meta(part)
            if not same_job(old, meta):
                raise CacheError("different job")
            layouts = {k: npy_layout(part / f"{k}.npy", level_shape(meta, k), dtype, what="")
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
    write_meta(part, meta)
    writers = {}
    for k in LEVELS:
        shape = level_shape(meta, k)
        create_row_file(part / f"{k}.npy", shape, dtype)
        writers[k] = RowWriter(part / f"{k}.npy", NpyLayout(len(header_bytes(shape, dtype)), shape, dtype))
    done = np.zeros(n, dtype=np.bool_)
    sizes = np.zeros((n, 2), dtype=np.int64)
    crcs = np.zeros((n, len(LEVELS)), np.uint32)
    save_npy_atomic(part / "sizes.npy", sizes)
    save_npy_atomic(part / "checksums.npy", crcs)
    save_npy_atomic(part / "done.npy", done)
    return writers, done, sizes, crcs


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
    if dtype not in DTYPES:
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
    name, storage = DTYPES[dtype]
    shapes = dict(zip(LEVELS, (list(s) for s in feature_shapes(model))))
    meta = CacheMeta(
        format_version=CACHE_FORMAT_VERSION, config=config_name, fingerprint=fingerprint,
        image_size=int(model.image_size), dtype=name, storage_dtype=storage, num_images=n,
        image_ids=ids, original_sizes=[], shapes=shapes, complete=False, extra=dict(extra_meta or {}),
    )
    if not overwrite and (out_dir / "meta.json").is_file():
        try:
            old = read_meta(out_dir)
        except CacheError:
            old = None
        if old is not None and old.complete and same_job(old, meta):
            damage = find_damage(out_dir, old)
            if not damage:
                if old.files is None:
                    return _with_disk_note(lambda: add_checksums(out_dir, old), out_dir, part)
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
                    lambda: repair(model, load, out_dir, old, damage, batch_size, dtype, progress,
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
                arr = to_storage(t, dtype)
                maps[k].write(idx, arr)
                crcs[idx, j] = row_crc32(arr)
            for w in maps.values():
                w.sync()
            # Features are on disk before the mask says so: a crash never marks garbage done.
            done[idx] = True
            save_npy_atomic(part / "sizes.npy", sizes)
            save_npy_atomic(part / "checksums.npy", crcs)
            save_npy_atomic(part / "done.npy", done)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(b, list(idx))
    finally:
        bar.close()
        for w in maps.values():
            w.close()

    meta.original_sizes = sizes.tolist()
    meta.files = file_records(meta, crcs)
    meta.batch_size = batch_size
    meta.complete = True
    write_meta(part, meta)
    _swap_in(part, out_dir)
    return meta

