"""The project's one way to write a file that a user keeps: all or nothing.

Every result, checkpoint, cache file and config goes through :func:`atomic_write`: the bytes go
to a hidden temporary file in the destination directory through ordinary (not memory-mapped)
writes, are flushed and fsynced, and the temporary file is then ``os.replace``d over the target
and the directory fsynced. A crash, a kill or a full disk therefore leaves either the old file or
the new one, never a mix, and never a stray temporary file after a Python-level error.

A full disk (``ENOSPC``/``EDQUOT``) becomes :class:`DiskFullError`, whose message names the
path, what was being written and that the previous file is intact.

It lives in the lowest package (``sam_batch``) so that ``gpu_env``, ``ppo`` and ``scripts`` can
all import it without an upward dependency.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["DiskFullError", "atomic_write", "fsync_dir", "is_disk_full", "unlink_quietly"]

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """No space left on the device while writing a file; the previous file is untouched."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is the OS saying the device (or the user's quota) is full."""
    return isinstance(err, OSError) and err.errno in _FULL


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory so that a rename in it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory fds (Windows): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], Any],
    *,
    binary: bool = False,
    what: str = "file",
) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    Args:
        path: the destination; parent directories are created.
        write: writes the content to the open file object it is given.
        binary: open the temporary file in ``"wb"`` (else text, ``newline=""``).
        what: a few words for error messages ("checkpoint", "cache file", ...).

    Raises:
        DiskFullError: if the device ran out of space; ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600; the user's files are ordinary files
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        unlink_quietly(tmp)
        full = _disk_full(err)
        if full is not None:
            raise DiskFullError(
                full.errno,
                f"no space left on the device holding {path.parent}: writing the {what} "
                f"{path.name} failed and nothing was replaced (the previous {path.name}, if "
                f"any, is intact). Free some space (or choose another folder) and run again.",
            ) from err
        raise
    fsync_dir(path.parent)
    return path


def _disk_full(err: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT error in ``err`` or in its causes, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if is_disk_full(err):
            return err
        err = err.__cause__ or err.__context__
    return None
