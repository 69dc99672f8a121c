"""The one atomic-write helper: all or nothing, and a full disk is a clear error."""

import errno
import os

import pytest

from sam_batch import atomic_io
from sam_batch.atomic_io import DiskFullError, atomic_write


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "a" / "b.txt"
    atomic_write(target, lambda f: f.write("one"))
    atomic_write(target, lambda f: f.write("two"))
    assert target.read_text() == "two"
    assert sorted(os.listdir(target.parent)) == ["b.txt"]
    assert (target.stat().st_mode & 0o777) == 0o644


def test_error_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    atomic_write(target, lambda f: f.write("old"))

    def half_then_fail(f):
        f.write("new, half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


def test_disk_full_is_named_and_loses_nothing(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_write(target, lambda f: f.write(b"previous"), binary=True)

    def no_space(fd):  # the kernel reports ENOSPC at the latest on fsync
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_io.os, "fsync", no_space)
    with pytest.raises(DiskFullError) as info:
        atomic_write(target, lambda f: f.write(b"x" * 1000), binary=True, what="checkpoint")
    msg = str(info.value)
    assert "no space left" in msg and str(tmp_path) in msg and "last.pt" in msg
    assert "intact" in msg and "checkpoint" in msg
    monkeypatch.undo()
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["last.pt"]
