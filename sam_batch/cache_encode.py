"""Encoding images into a feature cache: resumable (``<dir>.partial`` keeps finished batches),
atomic (the finished cache is renamed into place) and confined to the cache's own folders
(``sam_batch.cache_folder``). Over an existing cache of the same job it repairs and updates in
place (see :func:`encode_to_cache`). See ``sam_batch.cache`` for the layout."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam_batch.atomic_io import DiskFullError, atomic_write, unlink_quietly
from sam_batch.cache_files import (CacheError, FileDamage, NpyLayout, RowWriter,
                                   create_row_file, header_bytes, npy_layout, read_rows, row_crc32)
from sam_batch.cache_folder import (ForeignFolderError, check_owned, is_empty,
                                    remove_cache_dir)
from sam_batch.cache_format import (CACHE_FORMAT_VERSION, DTYPES, LEVELS, CacheMeta,
                                    CacheMismatchError, file_records, job_differences,
                                    level_shape, partial_dir, read_meta, to_storage, write_meta)
from sam_batch.cache_images import compare_images, hash_images, image_hash, name_ids
from sam_batch.cache_repair import add_checksums, find_damage, repair, repair_done_mask
from sam_batch.encoder import encode_batch, feature_shapes, preprocess

log = logging.getLogger("sam_batch.cache")  # the cache's one logger, whichever file logs

PARTIAL_STATE = ("sizes.npy", "checksums.npy", "image_hashes.npy")
"""Files of a ``.partial`` folder that a finished cache records in ``meta.json`` instead."""
Say = Callable[[str], None]
"""Reports one thing done to an existing cache, for a person."""


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False), binary=True,
                 what="cache file")


class _Partial:
    """The open ``.partial`` folder: its row writers and per-image state (``done [N]``,
    ``sizes [N, 2]``, row CRCs ``[N, levels]``, image fingerprints ``[N]``)."""

    def __init__(self, part: Path, writers: dict[str, RowWriter], done: np.ndarray,
                 sizes: np.ndarray, crcs: np.ndarray, hashes: np.ndarray):
        self.part, self.writers = part, writers
        self.done, self.sizes, self.crcs, self.hashes = done, sizes, crcs, hashes

    def commit(self) -> None:
        """Make the rows written so far durable, then mark them done: a crash never marks
        unwritten rows done."""
        for w in self.writers.values():
            w.sync()
        save_npy_atomic(self.part / "sizes.npy", self.sizes)
        save_npy_atomic(self.part / "checksums.npy", self.crcs)
        save_npy_atomic(self.part / "image_hashes.npy", self.hashes)
        save_npy_atomic(self.part / "done.npy", self.done)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _resume_partial(part: Path, meta: CacheMeta, load: Callable[[int], np.ndarray],
                    hashes: list[str] | None, overwrite: bool, progress: bool,
                    say: Say) -> _Partial | None:
    """The interrupted work in ``part`` when it is this job's, with the images whose pixels
    changed since then unmarked; ``None`` when it must start over. A partial cache of another
    job is refused unless ``overwrite``."""
    try:
        old = read_meta(part)
    except CacheError as e:
        say(f"{part}: unusable partial cache ({e}); starting over")
        return None
    diffs = job_differences(old, meta)
    if diffs:
        if not overwrite:
            raise CacheMismatchError(
                f"{part} holds an interrupted sam2click-embed of another job ({'; '.join(diffs)}). "
                "Nothing was changed: re-run that job to finish it, or pass --overwrite to "
                "discard it and encode this one.")
        say(f"{part}: discarding an interrupted encoding of another job ({'; '.join(diffs)})")
        return None
    if old.image_ids != meta.image_ids:
        say(f"{part}: the images differ from those of the interrupted run; starting over")
        return None
    n, dtype = meta.num_images, np.dtype(meta.storage_dtype)
    try:
        layouts = {k: npy_layout(part / f"{k}.npy", level_shape(meta, k), dtype, what="")
                   for k in LEVELS}
        arrays = {k: np.load(part / f"{k}.npy", allow_pickle=False)
                  for k in ("done", "sizes", "checksums", "image_hashes")}
        shapes = {"done": ((n,), np.bool_), "sizes": ((n, 2), np.int64),
                  "checksums": ((n, len(LEVELS)), np.uint32), "image_hashes": ((n,), np.dtype("S32"))}
        for k, (shape, dt) in shapes.items():
            if arrays[k].shape != shape or arrays[k].dtype != dt:
                raise CacheError(f"{k}.npy is {arrays[k].shape} {arrays[k].dtype}, expected {shape} {dt}")
    except (CacheError, OSError, ValueError) as e:
        say(f"{part}: unusable partial cache ({e}); starting over")
        return None
    done, hashed = arrays["done"].copy(), arrays["image_hashes"].copy()
    rows = np.flatnonzero(done)
    now = [hashes[i] for i in rows] if hashes is not None else hash_images(load, rows, progress=progress)
    stale = [int(i) for i, h in zip(rows, now) if hashed[i].decode() != h]
    if stale:
        done[stale] = False
        say(f"{part}: {len(stale)} image(s) changed on disk since they were encoded "
            f"({name_ids([meta.image_ids[i] for i in stale])}); re-encoding them")
    log.info("resuming %s: %d of %d images already encoded", part, int(done.sum()), n)
    writers = {k: RowWriter(part / f"{k}.npy", layouts[k]) for k in LEVELS}
    return _Partial(part, writers, done, arrays["sizes"].copy(), arrays["checksums"].copy(), hashed)


def _open_partial(part: Path, meta: CacheMeta, load: Callable[[int], np.ndarray],
                  hashes: list[str] | None, overwrite: bool, progress: bool, say: Say) -> _Partial:
    """Row writers and state of ``part``: resumed when it holds this job, otherwise created
    from scratch (an unusable partial of this job is removed file by file first)."""
    if part.is_dir() and not is_empty(part):
        resumed = _resume_partial(part, meta, load, hashes, overwrite, progress, say)
        if resumed is not None:
            return resumed
        remove_cache_dir(part)
    elif part.is_dir():
        os.rmdir(part)
    n, dtype = meta.num_images, np.dtype(meta.storage_dtype)
    part.mkdir(parents=True)
    write_meta(part, meta)
    writers = {}
    for k in LEVELS:
        shape = level_shape(meta, k)
        create_row_file(part / f"{k}.npy", shape, dtype)
        writers[k] = RowWriter(part / f"{k}.npy", NpyLayout(len(header_bytes(shape, dtype)), shape, dtype))
    state = _Partial(part, writers, np.zeros(n, np.bool_), np.zeros((n, 2), np.int64),
                     np.zeros((n, len(LEVELS)), np.uint32), np.zeros(n, np.dtype("S32")))
    state.commit()
    return state


def _reuse_rows(state: _Partial, meta: CacheMeta, hashes: list[str], old_dir: Path, old: CacheMeta,
                chunk: int = 16) -> int:
    """Copy into ``state`` the features of every image that ``old_dir``'s cache holds under the
    same id and fingerprint (and whose rows pass their CRC); returns how many were copied."""
    where = {i: j for j, i in enumerate(old.image_ids)}
    pairs = [(i, where[k]) for i, k in enumerate(meta.image_ids)
             if not state.done[i] and k in where and old.image_hashes is not None
             and old.image_hashes[where[k]] == hashes[i]]
    if not pairs or old.files is None:
        return 0
    sdtype = np.dtype(old.storage_dtype)
    maps = {k: read_rows(old_dir / f"{k}.npy", npy_layout(old_dir / f"{k}.npy", level_shape(old, k),
                                                          sdtype, what=""))
            for k in LEVELS}
    want = {k: np.asarray(old.files[f"{k}.npy"]["row_crc32"], np.uint32) for k in LEVELS}
    copied = 0
    for s in range(0, len(pairs), chunk):
        new_i = np.array([p[0] for p in pairs[s : s + chunk]])
        old_j = np.array([p[1] for p in pairs[s : s + chunk]])
        rows = {k: np.asarray(maps[k][old_j]) for k in LEVELS}
        crcs = {k: row_crc32(rows[k]) for k in LEVELS}
        sound = np.all([crcs[k] == want[k][old_j] for k in LEVELS], axis=0)
        if not sound.any():
            continue
        for j, k in enumerate(LEVELS):
            state.writers[k].write(new_i[sound].tolist(), rows[k][sound])
            state.crcs[new_i[sound], j] = crcs[k][sound]
        state.sizes[new_i[sound]] = np.asarray(old.original_sizes, np.int64)[old_j[sound]]
        state.hashes[new_i[sound]] = [hashes[i].encode() for i in new_i[sound]]
        state.done[new_i[sound]] = True
        copied += int(sound.sum())
    del maps
    state.commit()
    return copied


def _swap_in(part: Path, out_dir: Path) -> None:
    """Rename the finished ``part`` onto ``out_dir``; an existing ``out_dir`` (checked again to
    hold only a cache) is renamed away first and its files deleted only once the new one is in
    place."""
    old = None
    if check_owned(out_dir):
        old = out_dir.with_name(f"{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
    os.rename(part, out_dir)
    if old is not None:
        try:
            remove_cache_dir(old)
        except (ForeignFolderError, OSError) as e:
            log.warning("the previous cache was moved to %s and could not be deleted (%s); "
                        "delete it yourself", old, e)


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
    notes: list[str] | None = None,
) -> CacheMeta:
    """Encode every image with SAM2 into the cache directory ``out_dir`` (resumable, atomic).

    ``out_dir`` (and ``<out_dir>.partial``) must be new, empty, or hold a feature cache and
    nothing else; a folder holding anything else is refused whatever ``overwrite`` says
    (:class:`~sam_batch.cache_folder.ForeignFolderError`), and nothing of it is touched.

    Over a complete cache of the same job (model, dtype, dataset, split, augmentation: see
    :func:`~sam_batch.cache_format.job_differences`) every image is read and fingerprinted,
    and the cache is brought up to date with the least work: damaged rows (see
    :func:`find_damage`) and images whose pixels changed are re-encoded in place, a missing or
    wrong ``done.npy`` is rewritten, and when images were added or removed a new cache is built
    that copies the features of the unchanged images. A cache of another job, or one whose
    ``meta.json`` is unreadable, is refused (:class:`CacheMismatchError`, naming what differs)
    unless ``overwrite``.

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
      extra_meta: free-form provenance stored in ``meta.json``; ``dataset``, ``split`` and
        ``embed_config``'s ``augment_copies``/``augment_seed`` take part in the job's identity.
      overwrite: replace a cache (or interrupted encoding) of another job, or re-encode a
        complete cache of this job from scratch.
      notes: when given, one line per thing done to an existing cache or partial cache
        (repaired, re-encoded, recorded, discarded) is appended instead of logged.

    Raises:
      ForeignFolderError: ``out_dir`` or ``<out_dir>.partial`` holds other files.
      CacheMismatchError: ``out_dir`` holds a cache of another job (without ``overwrite``).
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

    def say(msg: str) -> None:
        if notes is not None:
            notes.append(msg)
        else:
            log.warning("%s", msg)

    # Both folders are checked before anything is written: a foreign one is never touched.
    exists = check_owned(out_dir)
    check_owned(part)
    job = dict(load=load, ids=ids, out_dir=out_dir, part=part, meta=meta,
               original_sizes=original_sizes, batch_size=batch_size, dtype=dtype,
               progress=progress, on_batch=on_batch, overwrite=overwrite, say=say)
    if exists and not is_empty(out_dir):
        try:
            old = read_meta(out_dir)
        except CacheError as e:
            if not overwrite:
                raise CacheMismatchError(
                    f"{out_dir} holds a damaged feature cache ({e}): which model and images "
                    "built it cannot be told, so it is not repaired. Nothing was changed: pass "
                    "another --out, or `sam2click-embed --overwrite` to replace it.") from e
            old = None
        if old is not None:
            diffs = job_differences(old, meta)
            if diffs and not overwrite:
                raise CacheMismatchError(
                    f"{out_dir} holds a feature cache of another job ({'; '.join(diffs)}). "
                    "Nothing was changed: pass another --out for this one, or "
                    "`sam2click-embed --overwrite` to replace it.")
            if not diffs and not overwrite:
                if old.complete:
                    return _update(model, old, **job)
                say(f"{out_dir}: its meta.json says the cache is incomplete; encoding it again")
    return _with_disk_note(lambda: _encode_partial(model, **job), out_dir, part)


def _update(model: torch.nn.Module, old: CacheMeta, *, load: Callable[[int], np.ndarray],
            ids: list[str], out_dir: Path, part: Path, meta: CacheMeta,
            original_sizes: Sequence[tuple[int, int]] | None, batch_size: int, dtype: torch.dtype,
            progress: bool, on_batch: Callable[[int, list[int]], None] | None, overwrite: bool,
            say: Say) -> CacheMeta:
    """Bring the complete cache ``old`` of this job up to date with today's images and repair
    what ``find_damage`` and the done mask show; see :func:`encode_to_cache`."""
    job = dict(load=load, ids=ids, out_dir=out_dir, part=part, meta=meta,
               original_sizes=original_sizes, batch_size=batch_size, dtype=dtype,
               progress=progress, on_batch=on_batch, overwrite=overwrite, say=say)
    hashes = hash_images(load, range(len(ids)), progress=progress)
    changes = compare_images(old.image_ids, old.image_hashes, ids, hashes)
    if old.image_ids != ids:
        say(f"{out_dir}: the images are not those of the cache ({changes.describe()}); "
            "building it anew, copying the features of the unchanged images")
        return _with_disk_note(lambda: _encode_partial(model, hashes=hashes, reuse=(out_dir, old), **job),
                               out_dir, part)
    damage = find_damage(out_dir, old)
    if damage and old.files is None:  # no checksums to tell good rows from bad: rebuild it all
        say(f"{out_dir} is damaged ({'; '.join(d.reason for d in damage.values())}) and has no "
            "checksums (written by an older version); re-encoding every image")
        return _with_disk_note(lambda: _encode_partial(model, hashes=hashes, **job), out_dir, part)
    if old.files is None:
        old = _with_disk_note(lambda: add_checksums(out_dir, old), out_dir, part)
        say(f"{out_dir}: recorded the checksums of a cache written without them")
    for dmg in damage.values():
        say(f"{out_dir}: re-encoding {dmg.rows.size} image(s): {dmg.reason}")
    changed = [i for i, k in enumerate(ids) if k in set(changes.changed)]
    if changed:
        say(f"{out_dir}: {len(changed)} image(s) changed on disk since they were encoded "
            f"({name_ids(changes.changed)}); re-encoding only those")
        for k in LEVELS:
            rows = np.union1d(damage[k].rows if k in damage else np.zeros(0, np.int64), changed)
            damage[k] = FileDamage(damage[k].reason if k in damage else "changed images",
                                   rows.astype(np.int64), rebuild=k in damage and damage[k].rebuild)
    if damage:
        old = _with_disk_note(
            lambda: repair(model, load, out_dir, old, damage, batch_size, dtype, progress,
                           on_batch, hashes=hashes), out_dir, part, repairing=True)
    fixed = _with_disk_note(lambda: repair_done_mask(out_dir, old.num_images), out_dir, part,
                            repairing=True)
    if fixed:
        say(f"{out_dir}: {fixed}")
    if old.image_hashes is None:
        old.image_hashes = hashes
        _with_disk_note(lambda: write_meta(out_dir, old), out_dir, part, repairing=True)
        say(f"{out_dir}: recorded the fingerprints of its images (written without them: images "
            "changed before today cannot be told)")
    if not (damage or fixed):
        log.info("%s already holds this cache and it is sound; nothing to do "
                 "(sam2click-embed --overwrite re-encodes it)", out_dir)
    return old


def _with_disk_note(work: Callable[[], Any], out_dir: Path, part: Path,
                    repairing: bool = False) -> Any:
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


def _encode_partial(model: torch.nn.Module, *, load: Callable[[int], np.ndarray], ids: list[str],
                    out_dir: Path, part: Path, meta: CacheMeta,
                    original_sizes: Sequence[tuple[int, int]] | None, batch_size: int,
                    dtype: torch.dtype, progress: bool,
                    on_batch: Callable[[int, list[int]], None] | None, overwrite: bool, say: Say,
                    hashes: list[str] | None = None,
                    reuse: tuple[Path, CacheMeta] | None = None) -> CacheMeta:
    """Encode into ``part`` every image not done yet (after copying the reusable rows of
    ``reuse``'s cache), then swap the finished cache in."""
    from tqdm.auto import tqdm

    n = meta.num_images
    state = _open_partial(part, meta, load, hashes, overwrite, progress, say)
    try:
        if reuse is not None and hashes is not None:
            copied = _reuse_rows(state, meta, hashes, *reuse)
            if copied:
                say(f"{out_dir}: copied the features of {copied} unchanged image(s)")
        device = next(model.parameters()).device
        todo = np.flatnonzero(~state.done).tolist()
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        bar = tqdm(total=n, initial=int(state.done.sum()), desc=f"encoding -> {out_dir.name}",
                   unit="img", disable=not progress)
        try:
            for b, idx in enumerate(batches):
                inputs = []
                for i in idx:
                    img = load(i)
                    if original_sizes is not None and tuple(img.shape[:2]) != tuple(original_sizes[i]):
                        raise ValueError(f"image {ids[i]!r} is {img.shape[:2]} but original_sizes says "
                                         f"{tuple(original_sizes[i])}")
                    state.sizes[i] = img.shape[:2]
                    state.hashes[i] = image_hash(img).encode()
                    inputs.append(preprocess(img, meta.image_size))
                feats = encode_batch(model, torch.stack(inputs).to(device))
                for j, (k, t) in enumerate(zip(LEVELS, feats)):
                    arr = to_storage(t, dtype)
                    state.writers[k].write(idx, arr)
                    state.crcs[idx, j] = row_crc32(arr)
                state.done[idx] = True
                state.commit()
                bar.update(len(idx))
                if on_batch is not None:
                    on_batch(b, list(idx))
        finally:
            bar.close()
    finally:
        state.close()

    meta.original_sizes = state.sizes.tolist()
    meta.files = file_records(meta, state.crcs)
    meta.batch_size = batch_size
    meta.image_hashes = [h.decode() for h in state.hashes]
    meta.complete = True
    write_meta(part, meta)
    _swap_in(part, out_dir)
    # The per-image state of the work in progress is in meta.json now; a stale copy would only
    # mislead once the cache is repaired or updated in place.
    for name in PARTIAL_STATE:
        unlink_quietly(out_dir / name)
    return meta
