"""Which folders the feature cache may write into and delete: only its own.

A folder is the cache's when it does not exist, is empty, or holds nothing but the files a cache
is made of (``CACHE_FILES``, and the hidden temporary files an interrupted atomic write leaves).
Anything else in it (a training run's checkpoints, a user's notes, a sub-folder) means the folder
belongs to someone else: encoding refuses it whatever the flags, and removing an old cache
unlinks the cache's own files by name and never deletes a tree."""

from __future__ import annotations

import os
from pathlib import Path

from sam_batch.cache_files import CacheError
from sam_batch.cache_format import LEVELS

CACHE_FILES = frozenset({"meta.json", *(f"{k}.npy" for k in LEVELS), "done.npy", "sizes.npy",
                         "checksums.npy", "image_hashes.npy"})
"""Every file a cache folder (finished or ``.partial``) holds."""


class ForeignFolderError(CacheError):
    """A folder that holds something other than a feature cache: the cache never writes there."""


def _is_temp(name: str) -> bool:
    # sam_batch.atomic_io.atomic_write's temporary files: ".<target>.<random>.tmp"
    return name.startswith(".") and name.endswith(".tmp") and name[1:].split(".", 1)[0] != ""


def foreign_entries(d: Path) -> list[str]:
    """The entries of folder ``d`` that a cache does not consist of (sorted; sub-folders and
    links to folders end in ``/``)."""
    out = []
    for e in os.scandir(d):
        if e.is_dir(follow_symlinks=False):
            out.append(e.name + "/")
        elif not (e.name in CACHE_FILES or _is_temp(e.name)) or e.is_symlink():
            out.append(e.name)
    return sorted(out)


def check_owned(d: Path, *, flag: str = "--out") -> bool:
    """Whether ``d`` exists (as a folder the cache may write into); raises
    :class:`ForeignFolderError` naming what it holds when it is not the cache's."""
    if not d.exists() and not d.is_symlink():
        return False
    if not d.is_dir():
        raise ForeignFolderError(
            f"{d} exists and is not a folder; a feature cache is a folder. Nothing was changed: "
            f"pass another {flag} (sam2click-embed creates it).")
    other = foreign_entries(d)
    if other:
        shown = ", ".join(other[:6]) + (f" and {len(other) - 6} more" if len(other) > 6 else "")
        raise ForeignFolderError(
            f"{d} is not a feature cache folder: it holds {shown}, which sam2click-embed did "
            "not write. Embed writes only into a new or empty folder or one holding its own "
            f"cache, and --overwrite does not change that. Nothing was changed: pass another "
            f"{flag} (e.g. a new folder under caches/).")
    return True


def is_empty(d: Path) -> bool:
    return d.is_dir() and not any(os.scandir(d))


def remove_cache_dir(d: Path) -> None:
    """Delete the cache folder ``d`` file by file: only its cache files and temporary files are
    unlinked, then the (then empty) folder removed. If anything else is in it, nothing is
    deleted and :class:`ForeignFolderError` says so."""
    if d.is_symlink():  # a link to a cache elsewhere: the link goes, the files it points at stay
        os.unlink(d)
        return
    check_owned(d)
    for e in os.scandir(d):
        os.unlink(e.path)
    os.rmdir(d)
