"""Loading a finished feature cache onto a device, refusing unfinished, damaged or mismatched
caches with a message that says what to do."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sam_batch.cache_files import CacheError, npy_layout, read_rows, row_crc32
from sam_batch.cache_format import (CACHE_FORMAT_VERSION, LEVELS, TORCH_DTYPES, CacheMeta,
                                    CacheMismatchError, FeatureCache, from_storage, level_shape,
                                    partial_dir, read_meta, repair_hint)
from sam_batch.cache_images import compare_images, hash_images, name_ids

log = logging.getLogger("sam_batch.cache")  # the cache's one logger, whichever file logs


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
    images: Callable[[int], np.ndarray] | None = None,
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
    a damaged file raises :class:`CacheError` naming it and the damaged images.

    ``images``: ``j -> the original image (HxWx3 uint8) of the j-th loaded image`` as it is
    today (``j`` runs over ``indices`` when given). Each is fingerprinted and compared with the
    fingerprint recorded when it was encoded; features of pixels that changed since are refused
    (:class:`CacheError` naming the images and saying to re-run ``sam2click-embed``). It costs
    one decode per image."""
    d = Path(path)
    if d.name.endswith(".partial"):
        raise CacheError(f"{d} is an unfinished cache (.partial); re-run the encoding to finish it")
    if not d.is_dir():
        hint = " (an unfinished run left " + str(partial_dir(d)) + "; re-run to finish it)" if partial_dir(d).is_dir() else ""
        raise CacheError(f"feature cache {d} does not exist{hint}; build it with "
                         f"`sam2click-embed --out {d}`")
    meta = read_meta(d)
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
                "build a cache for this model with `sam2click-embed --out NEW_DIR` (and the same "
                "--sam2-config/--sam2-checkpoint/--sam2-image-size), or use the model it was built with"
            )
    _check_done(d, meta.num_images)
    rows = _check_indices(indices, meta.num_images, d)
    dtype = TORCH_DTYPES[meta.dtype]
    hint = repair_hint(d)
    layouts, problems = {}, []
    for k in LEVELS:
        f = d / f"{k}.npy"
        try:
            layouts[k] = npy_layout(f, level_shape(meta, k), np.dtype(meta.storage_dtype), what=hint)
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
                    "were checked. Re-run `sam2click-embed` over it to record them.", d)
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
            t[s : s + chunk].copy_(from_storage(part, dtype))
        out.append(t)
        del a
    if bad_rows:
        lines = [f"{d / name}: image(s) {_name_rows(meta, r)} fail their CRC-32 check"
                 for name, r in bad_rows.items()]
        raise CacheError(f"feature cache {d} is damaged:\n  " + "\n  ".join(lines) + f"\n{hint}")
    if images is not None:
        _check_images(d, meta, images, rows)
    if rows is not None:
        hashes = meta.image_hashes
        meta = replace(meta, num_images=len(rows), image_ids=[meta.image_ids[i] for i in rows],
                       original_sizes=[meta.original_sizes[i] for i in rows],
                       image_hashes=None if hashes is None else [hashes[i] for i in rows])
    return FeatureCache(out[0], out[1], out[2], meta)


def _check_done(d: Path, n: int) -> None:
    f = d / "done.npy"
    try:
        done = np.load(f, allow_pickle=False) if f.is_file() else None
    except (ValueError, OSError, EOFError):
        done = np.zeros(0, np.bool_)
    if done is None or done.shape != (n,) or not bool(done.all()):
        what = "is missing" if done is None else "does not mark every image done"
        raise CacheError(f"{f} {what}, so the cache cannot be trusted whole; "
                         f"{repair_hint(d)} and rewrites done.npy once every image is sound")


def _check_images(d: Path, meta: CacheMeta, images: Callable[[int], np.ndarray],
                  rows: np.ndarray | None) -> None:
    """Refuse features of images whose pixels changed since they were encoded."""
    if meta.image_hashes is None:
        log.warning("%s has no image fingerprints (written by an older version): images changed "
                    "on disk since it was built cannot be told. Re-run `sam2click-embed` over it "
                    "to record them.", d)
        return
    sel = np.arange(meta.num_images) if rows is None else rows
    ids = [meta.image_ids[i] for i in sel]
    now = hash_images(images, range(len(sel)))
    changes = compare_images(ids, [meta.image_hashes[i] for i in sel], ids, now)
    if changes.changed:
        raise CacheError(
            f"feature cache {d} holds the features of other pixels than today's for "
            f"{len(changes.changed)} image(s): {name_ids(changes.changed)} changed on disk since "
            f"the cache was built. Re-run `sam2click-embed` with the arguments that built "
            f"{d.name} (its meta.json records them under extra.embed_config): it re-encodes only "
            "the changed images.")


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

