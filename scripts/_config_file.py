"""Training settings from a file, with flags on top: ``--config run.json`` and ``--print-config``.

A settings file is a run's ``config.json`` (every setting, nested by section) or a hand-written
subset of it, nested (``{"ppo": {"num_envs": 64}}``) or flat (``{"num_envs": 64}``); JSON, or YAML
when the name ends in ``.yaml``/``.yml``. Settings the file leaves out take the command's
defaults; flags given beside ``--config`` override the file. A name that is no setting is refused,
naming it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ppo.config import SECTIONS, TrainConfig

from ._command import cli, fail


@dataclass(frozen=True)
class TrainCommand(TrainConfig):
    """PPO on the batched click environment."""

    config: Path | None = None
    """A JSON or YAML file of settings: a run's saved config.json, or a subset of it (nested by
    section, or flat by setting name). Flags given with it override it."""
    print_config: bool = False
    """Print the settings this command line resolves to (JSON, the config.json format) and exit
    without training."""

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{name: getattr(self, name) for name in SECTIONS})


class ConfigFileError(ValueError):
    """A settings file that cannot be read or names no setting; the message says which."""


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigFileError(f"--config {path}: no such file; pass a run's config.json or a "
                              f"JSON/YAML file of settings")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # PyYAML comes with SAM2's hydra/omegaconf

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parser's error, reported with the file
        raise ConfigFileError(f"--config {path}: not valid {path.suffix.lstrip('.') or 'JSON'} "
                              f"({err})") from err
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config {path}: expected a mapping of settings, got "
                              f"{type(data).__name__}")
    return data


def read_config_file(path: Path, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (the defaults) with the settings of the file at ``path`` applied."""
    data = _load(Path(path))
    nested = (base or TrainConfig()).to_dict()
    names = {section: {f.name for f in fields(cls)} for section, cls in SECTIONS.items()}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for name, v in value.items():
                if name not in names[key]:
                    raise ConfigFileError(
                        f"--config {path}: unknown setting {key}.{name!r}; the {key} section "
                        f"has {', '.join(sorted(names[key]))}")
                nested[key][name] = v
            continue
        homes = [s for s, n in names.items() if key in n]
        if key in ("segmenter", "policy"):  # flat names of the two sections' "kind"
            homes, key = [key], "kind"
        if not homes:
            raise ConfigFileError(
                f"--config {path}: unknown setting {key!r}; use a section ("
                f"{', '.join(SECTIONS)}) or a setting's name as sam2click-train --help shows "
                f"it, with _ for -")
        nested[homes[0]][key] = value
    try:
        return TrainConfig.from_dict(nested)
    except (TypeError, ValueError) as err:
        raise ConfigFileError(f"--config {path}: {err}") from err


def parse(command: str, argv: list[str] | None, description: str | None) -> TrainConfig | None:
    """The training config of a command line (``--config`` file first, flags on top); ``None``
    after ``--print-config`` has printed it."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    base = TrainConfig()
    if known.config is not None:
        try:
            base = read_config_file(known.config)
        except ConfigFileError as err:
            raise fail(command, str(err)) from err
    default = TrainCommand(**{name: getattr(base, name) for name in SECTIONS}, config=known.config)
    cmd = cli(command, TrainCommand, argv, description, default=default)
    cfg = cmd.train_config()
    if cmd.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return None
    return cfg
