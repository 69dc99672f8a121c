"""Folder helpers of the data-safety tests: a fresh copy of a module-scoped folder for each
test, and a snapshot of every file's bytes to prove a refused command left a folder as it was."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_folder(source: Path, tmp_path: Path, name: str) -> Path:
    """``source`` copied to ``tmp_path / name``."""
    out = tmp_path / name
    shutil.copytree(source, out)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}
