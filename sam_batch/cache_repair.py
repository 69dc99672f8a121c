"""Finding and repairing damage in a finished feature cache: each level file is checked
against the sizes and per-row CRC-32s that ``meta.json`` records, and only the damaged images
are re-encoded, in place (``sam_batch.cache.encode_to_cache`` calls these on a cache that
already exists)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sam_batch.atomic_io import atomic_write
from sam_batch.cache_files import (CacheError, FileDamage, NpyLayout, RowWriter, create_row_file,
                                   extend_row_file, header_bytes, npy_layout, read_rows,
                                   row_crc32, scan_rows)
from sam_batch.cache_format import (LEVELS, CacheMeta, file_records, level_shape, read_meta,
                                    to_storage, write_meta)
from sam_batch.encoder import encode_batch, preprocess

log = logging.getLogger("sam_batch.cache")  # the cache's one logger, whichever file logs


def find_damage(path: str | Path, meta: CacheMeta | None = None) -> dict[str, FileDamage]:
    """Check every level file of the finished cache at ``path`` against ``meta.json``: header,
    size and (when recorded) each image row's CRC-32. Returns ``{level: FileDamage}`` for the
    damaged files only (empty when the cache is sound). Reads every byte once."""
    d = Path(path)
    meta = read_meta(d) if meta is None else meta
    dtype = np.dtype(meta.storage_dtype)
    out = {}
    for k in LEVELS:
        f = d / f"{k}.npy"
        rec = (meta.files or {}).get(f.name)
        try:
            layout = npy_layout(f, level_shape(meta, k), dtype, what="")
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


def truncated_layout(f: Path, shape: tuple[int, ...], dtype: np.dtype) -> NpyLayout | None:
    """The layout of ``f`` when its header is right and only its size is off (truncated or
    padded): its intact leading rows can be kept."""
    try:
        with open(f, "rb") as fh:
            head = fh.read(len(header_bytes(shape, dtype)))
    except OSError:
        return None
    want = header_bytes(shape, dtype)
    return NpyLayout(len(want), shape, dtype) if head == want else None


def repair(model: torch.nn.Module, load: Callable[[int], np.ndarray], out_dir: Path, meta: CacheMeta,
           damage: dict[str, FileDamage], batch_size: int, dtype: torch.dtype, progress: bool,
           on_batch: Callable[[int, list[int]], None] | None,
           hashes: list[str] | None = None) -> CacheMeta:
    """Re-encode, in place, only the images that ``damage`` lists, and rewrite only the damaged
    files' rows. Sound files are never written. A crash midway leaves rows that fail their
    CRC, so the next run repairs them again. ``hashes``: today's image fingerprints, recorded
    with the re-encoded images' sizes (images that changed on disk are repaired like damage)."""
    from tqdm.auto import tqdm

    sdtype = np.dtype(meta.storage_dtype)
    crcs = np.stack([np.asarray(meta.files[f"{k}.npy"]["row_crc32"], np.uint32) for k in LEVELS], 1)
    writers: dict[str, RowWriter] = {}
    for k, dmg in damage.items():
        f = out_dir / f"{k}.npy"
        shape = level_shape(meta, k)
        layout = truncated_layout(f, shape, sdtype) if dmg.rebuild else None
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
    sizes = [list(s) for s in meta.original_sizes]
    bar = tqdm(total=sum(map(len, batches)), desc=f"repairing {out_dir.name}", unit="img",
               disable=not progress)
    try:
        for b, idx in enumerate(batches):
            # The whole aligned batch is encoded (features depend on batch mates); only the
            # damaged rows are written.
            originals = [load(i) for i in idx]
            for i, img in zip(idx, originals):
                sizes[i] = [int(img.shape[0]), int(img.shape[1])]
            feats = encode_batch(model, torch.stack([preprocess(im, meta.image_size) for im in originals]).to(device))
            for k, t in zip(LEVELS, feats):
                rows = [i for i in idx if i in bad.get(k, ())]
                if not rows:
                    continue
                arr = to_storage(t, dtype)[[idx.index(i) for i in rows]]
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
    meta.files = file_records(meta, crcs)
    meta.original_sizes = sizes
    if hashes is not None:
        meta.image_hashes = list(hashes)
    write_meta(out_dir, meta)
    return meta


def repair_done_mask(out_dir: Path, n: int) -> str:
    """Rewrite ``done.npy`` as ``[n]`` all true when it is missing, unreadable or not that
    (called once every level file is sound); returns what was wrong, or ``""``."""
    f = out_dir / "done.npy"
    if not f.is_file():
        why = "done.npy was missing"
    else:
        try:
            done = np.load(f, allow_pickle=False)
            why = ("" if done.shape == (n,) and done.dtype == np.bool_ and bool(done.all())
                   else f"done.npy was {done.shape} {done.dtype} with {int(np.sum(done))} marked done")
        except (ValueError, OSError, EOFError) as e:
            why = f"done.npy was unreadable ({e})"
    if not why:
        return ""
    atomic_write(f, lambda fh: np.save(fh, np.ones(n, np.bool_), allow_pickle=False), binary=True,
                 what="cache file")
    return f"{why}; rewritten (every image's features are present and pass their checksums)"


def add_checksums(out_dir: Path, meta: CacheMeta) -> CacheMeta:
    """Record the size and row CRCs of a cache written before checksums existed (its files
    passed the header and size checks; their current bytes are trusted)."""
    sdtype = np.dtype(meta.storage_dtype)
    crcs = np.zeros((meta.num_images, len(LEVELS)), np.uint32)
    for j, k in enumerate(LEVELS):
        layout = npy_layout(out_dir / f"{k}.npy", level_shape(meta, k), sdtype, what="")
        a = read_rows(out_dir / f"{k}.npy", layout)
        for s in range(0, meta.num_images, 16):
            crcs[s : s + 16, j] = row_crc32(a[s : s + 16])
        del a
    meta.files = file_records(meta, crcs)
    write_meta(out_dir, meta)
    log.info("%s: recorded the checksums of a cache written without them", out_dir)
    return meta

