"""The commands: each one's ``--help`` runs, and every flag the README shows exists."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w])")
COMMAND = re.compile(r"(?:sam2click-(\w+)|-m scripts\.(\w+))")


def entry_points() -> dict[str, str]:
    """``{command: "module:function"}`` from pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def help_flags(command: str, capsys, monkeypatch, *extra: str) -> set[str]:
    """The flags ``sam2click-<command> [extra] --help`` lists."""
    module, func = entry_points()[f"sam2click-{command}"].split(":")
    monkeypatch.setenv("COLUMNS", "250")  # one flag per line, none wrapped
    with pytest.raises(SystemExit) as stop:
        rc = getattr(importlib.import_module(module), func)([*extra, "--help"])
        raise SystemExit(rc)
    assert stop.value.code in (0, None)
    return set(FLAG.findall(capsys.readouterr().out))


def readme_commands() -> list[tuple[str, list[str]]]:
    """``(command, [words after it])`` of every command line the README shows (inline code and
    code blocks, backslash continuations joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    spans = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
    found = []
    for span in spans:
        for line in span.splitlines():
            line = line.split("#", 1)[0]
            for m in COMMAND.finditer(line):
                found.append((m.group(1) or m.group(2), line[m.end():].split()))
    return found


def test_every_command_has_an_entry_point_in_scripts():
    scripts = {p.stem for p in (ROOT / "scripts").glob("*.py") if p.stem != "__init__"}
    assert {k.removeprefix("sam2click-") for k in entry_points()} == scripts
    for target in entry_points().values():
        assert target.endswith(":main") and target.startswith("scripts.")


@pytest.mark.parametrize("command", ["train", "evaluate", "baselines", "embed", "bench"])
def test_help_runs(command, capsys, monkeypatch):
    flags = help_flags(command, capsys, monkeypatch)
    assert "--help" in flags and len(flags) > 3


def test_every_flag_the_readme_uses_exists(capsys, monkeypatch):
    known = {c: help_flags(c, capsys, monkeypatch)
             for c in ("train", "evaluate", "baselines", "embed", "bench")}
    known["seeds"] = known["train"] | {"--seeds", "--results", "--summary-dir"}
    known["render"] = help_flags("render", capsys, monkeypatch)
    for mode in ("dataset", "episodes"):
        known[f"render {mode}"] = help_flags("render", capsys, monkeypatch, mode)
    commands = readme_commands()
    assert {c for c, _ in commands} >= {"train", "evaluate", "baselines", "embed", "render",
                                        "seeds", "bench"}
    for command, words in commands:
        if command == "render" and words and words[0] in ("dataset", "episodes"):
            command = f"render {words[0]}"
        for flag in FLAG.findall(" ".join(words)):
            assert flag in known[command], f"README: sam2click-{command} has no flag {flag}"
