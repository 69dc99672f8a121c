"""The feature cache's ``.npy`` files: written row by row with ordinary writes, checked on read.

Each level file (``image_embed.npy``...) is a plain C-order ``.npy`` holding one row per image.
It is created with its header and its full size reserved up front (``posix_fallocate`` where the
file system supports it), and rows are then written with ``os.pwrite``, never through a writable
memory map: a full disk is an ``OSError(ENOSPC)`` raised by the write that failed (turned into
:class:`~sam_batch.atomic_io.DiskFullError`), not a ``SIGBUS`` that kills the process.

Every row gets a CRC-32 (zlib, ~2 GB/s) when it is written; ``meta.json`` records, per file, its
size in bytes and its rows' CRCs. Reading checks the header (dtype, shape, no Python objects) and
the size before anything is memory-mapped, then the CRC of each row that is read, so a truncated,
replaced or bit-flipped file is named with the images it damages instead of surfacing as a numpy
error or as silently wrong features.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np

from sam_batch.atomic_io import DiskFullError, is_disk_full

__all__ = ["CacheError", "FileDamage", "NpyLayout", "RowWriter", "create_row_file", "extend_row_file",
           "npy_layout",
           "row_crc32", "scan_rows"]


class CacheError(ValueError):
    """A feature cache is missing, incomplete or corrupt (the message says what to do)."""


class NpyLayout:
    """Where a level file's rows live: header length, row size, total expected size."""

    def __init__(self, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.offset, self.shape, self.dtype = offset, tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.nbytes = offset + self.shape[0] * self.row_bytes


class FileDamage:
    """What is wrong with one level file: ``rows`` lists the damaged images (all of them when
    ``rebuild``: the header itself is unusable); ``reason`` is one line for a person."""

    def __init__(self, reason: str, rows: np.ndarray, rebuild: bool = False):
        self.reason, self.rows, self.rebuild = reason, rows, rebuild


def header_bytes(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` (v1.0) header of a C-order array of ``shape`` and ``dtype``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


def row_crc32(rows: np.ndarray) -> np.ndarray:
    """CRC-32 of each row's bytes (``rows [n, ...]`` -> ``uint32 [n]``)."""
    rows = np.ascontiguousarray(rows)
    return np.array([zlib.crc32(r) for r in rows.reshape(rows.shape[0], -1).view(np.uint8)],
                    dtype=np.uint32)


def npy_layout(path: Path, shape: tuple[int, ...], dtype: np.dtype, *, what: str) -> NpyLayout:
    """Read ``path``'s ``.npy`` header and check it against the expected ``shape``/``dtype``
    and the file's size. Raises :class:`CacheError` naming the file; ``what`` says how to
    repair it (appended to every message)."""
    if not path.is_file():
        raise CacheError(f"{path} is missing; {what}")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            have_shape, fortran, have_dtype = read(f, max_header_size=100_000)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError, EOFError) as e:
        raise CacheError(f"{path} is not a readable .npy file ({e}); {what}") from e
    if have_dtype.hasobject:
        raise CacheError(f"{path} holds Python objects (dtype {have_dtype}), not {np.dtype(dtype)} "
                         f"features; it was not written by this cache (nothing was unpickled); {what}")
    if tuple(have_shape) != tuple(shape) or have_dtype != np.dtype(dtype) or fortran:
        raise CacheError(f"{path} has shape {tuple(have_shape)} {have_dtype}"
                         f"{' (Fortran order)' if fortran else ''}, meta.json says {tuple(shape)} "
                         f"{np.dtype(dtype)}; {what}")
    layout = NpyLayout(offset, shape, dtype)
    size = path.stat().st_size
    if size != layout.nbytes:
        kind = "truncated" if size < layout.nbytes else "longer than its header says"
        raise CacheError(f"{path} is {kind}: {size} bytes, expected {layout.nbytes} "
                         f"({shape[0]} images x {layout.row_bytes} bytes + {offset} header); {what}")
    return layout


def _disk_full(e: OSError, path: Path, doing: str) -> OSError:
    if is_disk_full(e):
        return DiskFullError(e.errno, f"no space left on the device holding {path.parent}: {doing} "
                                      f"{path.name} failed. Free some space (or choose another "
                                      "folder) and run again.")
    return e


def _reserve(f, total: int) -> None:
    """Make the open file ``f`` ``total`` bytes long with its space reserved where the file
    system can (``posix_fallocate``); elsewhere a sparse ``truncate``. A full disk raises."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(f.fileno(), 0, total)
            return
        except OSError as e:
            if is_disk_full(e):
                raise
    f.truncate(total)  # no fallocate on this file system: a sparse file


def create_row_file(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Create ``path`` as a zero-filled ``.npy`` of ``shape``/``dtype`` with its space reserved:
    a disk too small for the whole file fails here, before any encoding."""
    head = header_bytes(shape, dtype)
    total = NpyLayout(len(head), shape, dtype).nbytes
    try:
        with open(path, "wb") as f:
            f.write(head)
            f.flush()
            _reserve(f, total)
    except OSError as e:
        raise _disk_full(e, path, f"reserving {total} bytes for") from e


def extend_row_file(path: Path, layout: NpyLayout) -> None:
    """Bring a truncated (or padded) level file with a sound header to its full size, keeping
    its leading rows; the new space is reserved like :func:`create_row_file`'s."""
    try:
        with open(path, "r+b") as f:
            f.truncate(min(layout.nbytes, os.fstat(f.fileno()).st_size))
            _reserve(f, layout.nbytes)
    except OSError as e:
        raise _disk_full(e, path, f"extending to {layout.nbytes} bytes") from e


class RowWriter:
    """Writes rows of an existing level file at their offsets with ``os.pwrite``."""

    def __init__(self, path: Path, layout: NpyLayout):
        self.path, self.layout = path, layout
        self._fd = os.open(path, os.O_RDWR)

    def write(self, indices: list[int], rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.layout.dtype)
        try:
            for i, row in zip(indices, rows):
                view = memoryview(row.reshape(-1).view(np.uint8))
                pos = self.layout.offset + int(i) * self.layout.row_bytes
                while view:
                    n = os.pwrite(self._fd, view, pos)
                    view, pos = view[n:], pos + n
        except OSError as e:
            raise _disk_full(e, self.path, "writing image rows to") from e

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise _disk_full(e, self.path, "flushing") from e

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_rows(path: Path, layout: NpyLayout) -> np.memmap:
    """A read-only memory map of a checked level file (its size is known to be right)."""
    return np.memmap(path, dtype=layout.dtype, mode="r", offset=layout.offset, shape=layout.shape)


def scan_rows(path: Path, layout: NpyLayout, crcs: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Indices of the rows of ``path`` whose CRC-32 differs from ``crcs``."""
    a = read_rows(path, layout)
    bad = [s + np.flatnonzero(row_crc32(a[s : s + chunk]) != crcs[s : s + chunk])
           for s in range(0, layout.shape[0], chunk)]
    del a
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)
