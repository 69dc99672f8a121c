"""sam2click-render never overwrites what is there: an output folder holding episode strips, or
an existing contact sheet, is refused unless --overwrite; --overwrite leaves the strips of one
run only and never touches other files."""

from __future__ import annotations

from pathlib import Path

import pytest


def _episodes(out: Path, *extra: str) -> None:
    from scripts import render

    render.main(["episodes", "--out", str(out), "--clicks", "2", *extra])


def test_episode_strips_are_not_overwritten_without_the_flag(tmp_path: Path) -> None:
    out = tmp_path / "eps"
    _episodes(out, "--episodes", "2")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(first) == 2 and all(n.startswith("episode_") for n in first)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"sam2click-render: error: .*eps already holds episode "
                                         r"strips \(episode_.*--overwrite.*Nothing was written"):
        _episodes(out, "--episodes", "1")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "notes.txt"} == first

    _episodes(out, "--episodes", "1", "--overwrite")  # one strip now: the other one goes
    names = sorted(p.name for p in out.iterdir())
    assert len([n for n in names if n.startswith("episode_")]) == 1
    assert "notes.txt" in names and (out / "notes.txt").read_text() == "mine"


def test_a_folder_without_strips_is_used(tmp_path: Path) -> None:
    out = tmp_path / "eps"
    out.mkdir()
    (out / "results.json").write_text("{}")
    _episodes(out, "--episodes", "1")
    assert len(list(out.glob("episode_*.png"))) == 1 and (out / "results.json").read_text() == "{}"


def test_contact_sheet_is_not_overwritten_without_the_flag(tmp_path: Path) -> None:
    from scripts import render

    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"a user's picture")
    args = ["dataset", "--out", str(sheet), "--count", "2", "--size", "32"]
    with pytest.raises(SystemExit, match=r"sheet\.png already exists; pass --overwrite"):
        render.main(args)
    assert sheet.read_bytes() == b"a user's picture"
    render.main(args + ["--overwrite"])
    assert sheet.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no temporary file left
