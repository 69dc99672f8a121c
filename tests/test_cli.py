"""The commands: each one's ``--help`` runs, and every flag the README shows exists."""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w])")
COMMAND = re.compile(r"(?:sam2click-(\w+)|-m (?:scripts|sam2click_cli)\.(\w+))")


def entry_points() -> dict[str, str]:
    """``{command: "module:function"}`` from pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def help_flags(command: str, capsys, monkeypatch, *extra: str) -> set[str]:
    """The flags ``sam2click-<command> [extra] --help`` lists."""
    module, func = entry_points()[f"sam2click-{command}"].split(":")
    module = module.replace("sam2click_cli.", "scripts.", 1)  # the clone's name of the package
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
    scripts = {p.stem for p in (ROOT / "scripts").glob("*.py") if not p.stem.startswith("_")}
    assert {k.removeprefix("sam2click-") for k in entry_points()} == scripts
    for target in entry_points().values():
        assert target.endswith(":main") and target.startswith("sam2click_cli.")


def test_the_wheel_lists_every_library_package_and_installs_no_generic_name():
    """Packages are listed by hand (the mapped names cannot be found): a new subpackage of the
    library must be listed, and scripts/ bench/ references/ install only under sam2click_cli."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    for top in ("sam_batch", "gpu_env", "ppo"):
        for init in (ROOT / top).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} is missing from [tool.setuptools] packages"
    assert {p.split(".")[0] for p in listed} == {"sam_batch", "gpu_env", "ppo", "sam2click_cli"}
    assert tool["package-dir"] == {"sam2click_cli": "scripts", "sam2click_cli.suite.bench": "bench",
                                   "sam2click_cli.suite.references": "references"}


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


# ---------------------------------------------------------------------------- help for users
HELP_MODES = [("train",), ("evaluate",), ("baselines",), ("embed",), ("bench",), ("seeds",),
              ("render",), ("render", "dataset"), ("render", "episodes")]


def help_text(words: tuple[str, ...], capsys, monkeypatch) -> str:
    module = importlib.import_module(f"scripts.{words[0]}")
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as stop:
        raise SystemExit(module.main([*words[1:], "--help"]))
    assert stop.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("words", HELP_MODES, ids=" ".join)
def test_help_is_plain_text(words, capsys, monkeypatch):
    """No RST literals, no class or module names, no generic group titles."""
    text = help_text(words, capsys, monkeypatch)
    assert "``" not in text
    assert not re.findall(r"\b[A-Z]\w*(?:Config|Segmenter|Decoder|Env)\b", text)
    assert not re.findall(r"\b(?:ppo|gpu_env|sam_batch)\.\w+", text)
    assert not re.findall(r"[─╭]\s*cfg[ .]", text)


def test_help_text_joins_a_docstring_paragraph_into_one_line():
    from scripts._command import plain

    doc = "Frames per batch (``--num-envs``\n    x steps).\n(second line)\n\n    Next paragraph."
    assert plain(doc) == "Frames per batch (--num-envs x steps). (second line)\n\nNext paragraph."


def test_seeds_help_lists_its_flags_and_the_training_flags(capsys, monkeypatch):
    text = help_text(("seeds",), capsys, monkeypatch)
    flags = set(FLAG.findall(text))
    assert {"--seeds", "--results", "--summary-dir", "--num-envs", "--config"} <= flags


# ---------------------------------------------------------------- errors name real flags
def _message_strings(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings, outside functions that build
    another program's command line (``pytest_command``)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    skip.add(id(stmt.value))
        if isinstance(node, ast.FunctionDef) and node.name == "pytest_command":
            skip |= {id(n) for n in ast.walk(node)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def test_every_flag_an_error_or_hint_names_exists(capsys, monkeypatch):
    """Each ``--flag`` in a message of a command is that command's flag; one in a library
    message is a flag of some command."""
    known = {}
    for words in HELP_MODES:
        known[words[0]] = known.get(words[0], set()) | set(FLAG.findall(help_text(words, capsys,
                                                                                  monkeypatch)))
    everything = set().union(*known.values())
    checked = 0
    for top in ("sam_batch", "gpu_env", "ppo", "scripts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            accepted = known.get(path.stem, everything) if top == "scripts" else everything
            for text in _message_strings(path):
                for flag in FLAG.findall(text):
                    checked += 1
                    assert flag in accepted, f"{path.relative_to(ROOT)}: {flag} in {text!r}"
    assert checked > 40


def test_resume_hints_name_the_flag_of_every_setting(capsys, monkeypatch):
    """``check_compatible`` suggests ``--<flag> <checkpoint's value>``: the flag of every saved
    setting exists (a section's kind is --policy / --segmenter)."""
    from ppo.config import TrainConfig
    from ppo.resume import _flag, flatten_config

    flags = set(FLAG.findall(help_text(("train",), capsys, monkeypatch)))
    for name in flatten_config(TrainConfig()):
        assert _flag(name) in flags, name


def test_errors_start_with_the_command_the_user_typed(monkeypatch, tmp_path):
    from scripts import evaluate, seeds, train

    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match=r"^sam2click-evaluate: error: --checkpoint"):
        evaluate.main(["--checkpoint", ""])
    with pytest.raises(SystemExit, match=r"^sam2click-seeds: error: give either --seeds"):
        seeds.main([])
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / "train.py")])  # python -m scripts.train
    with pytest.raises(SystemExit, match=r"^python -m scripts\.train: error: --config .*nope"):
        train.main(["--config", str(tmp_path / "nope.json")])
    monkeypatch.setattr(sys, "argv", ["/venv/bin/sam2click-train"])
    with pytest.raises(SystemExit, match=r"^sam2click-train: error: --config .*nope"):
        train.main(["--config", str(tmp_path / "nope.json")])


# ---------------------------------------------------------------------------- config files
def _printed_config(capsys, *argv: str) -> dict:
    from scripts import train

    assert train.main([*argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_config_file_round_trips_and_flags_override_it(capsys, tmp_path):
    saved = _printed_config(capsys, "--num-envs", "8", "--seed", "3", "--policy", "spatial")
    run = tmp_path / "config.json"
    run.write_text(json.dumps(saved))
    assert _printed_config(capsys, "--config", str(run)) == saved
    again = _printed_config(capsys, "--config", str(run), "--seed", "4")
    assert again["run"]["seed"] == 4 and again["ppo"]["num_envs"] == 8
    assert again["policy"]["kind"] == "spatial"


def test_a_hand_written_subset_keeps_the_other_defaults(capsys, tmp_path):
    defaults = _printed_config(capsys)
    nested, flat = tmp_path / "nested.json", tmp_path / "flat.yaml"
    nested.write_text(json.dumps({"ppo": {"num_envs": 16}, "seed": 5}))
    flat.write_text("num_envs: 16\nseed: 5\npolicy: spatial\n")
    for path in (nested, flat):
        cfg = _printed_config(capsys, "--config", str(path))
        assert cfg["ppo"]["num_envs"] == 16 and cfg["run"]["seed"] == 5
        changed = {(s, k) for s in cfg for k in cfg[s] if cfg[s][k] != defaults[s][k]}
        assert changed <= {("ppo", "num_envs"), ("run", "seed"), ("policy", "kind")}


@pytest.mark.parametrize("content, named", [
    ({"num_envz": 8}, "'num_envz'"),
    ({"ppo": {"num_envz": 8}}, "ppo.'num_envz'"),
    ({"ppo": {"num_envs": 8}, "sections": {}}, "'sections'"),
])
def test_unknown_keys_in_a_config_file_are_refused_by_name(content, named, tmp_path):
    from scripts import train

    path = tmp_path / "run.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as stop:
        train.main(["--config", str(path)])
    msg = str(stop.value.code)
    assert msg.startswith("sam2click-train: error: --config") and "unknown setting" in msg
    assert named in msg
