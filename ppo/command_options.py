"""Settings several commands share, each declared once, with one default and one docstring.

Each is a small frozen section that a command's config composes, as ``ppo.config.TrainConfig``
composes its sections. The commands parse with ``tyro.conf.OmitArgPrefixes``, so a section's
fields stay flat flags (``--device``, not ``--device.device``) and every documented flag keeps
its name. A command that needs another default passes its own instance as the field's default
and says why in its docstring (``sam2click-render episodes`` runs on the CPU by default).

Settings that share a name but not a meaning keep their own declarations: ``sam2click-embed``'s
``--batch-size`` (images per encoder forward), ``--out`` (a cache directory), ``--overwrite``
(re-encode a sound cache) and ``--seed`` (random SAM2 weights); ``sam2click-render dataset``'s
``--out`` (one PNG) and ``--seed`` (the synthetic generator's). Training's ``RunConfig`` keeps
its ``device``, ``seed``, ``overwrite`` and ``progress``: they are part of the config saved with
every run and its checkpoints, whose format a section there would change.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from ppo.factory import resolve_device


@dataclass(frozen=True)
class DeviceConfig:
    """Where the command runs."""

    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``."""

    def resolve(self) -> torch.device:
        """The torch device; ``ppo.factory.DeviceError`` says why a named one cannot be used."""
        return resolve_device(self.device)


@dataclass(frozen=True)
class EpisodesConfig:
    """The evaluation episodes of a command that scores clickers (evaluate, baselines)."""

    num_clicks: int = 20
    """Clicks per episode, the initial one included (NoC needs 20)."""
    batch_size: int = 64
    """Episodes evaluated at once."""
    seed: int = 0
    """Seed of the random-click baseline (in ``sam2click-baselines`` also of the learned
    clicker's training)."""

    def check(self, command: str) -> None:
        """Refuse values that cannot work, before any loading (see ``require_positive``)."""
        require_positive(command, batch_size=self.batch_size, num_clicks=self.num_clicks)


@dataclass(frozen=True)
class ResultsConfig:
    """Where a command that scores clickers writes results.json/csv and dice_vs_clicks.png."""

    out: Path | None = None
    """Output folder (``sam2click-evaluate``'s default: ``<checkpoint dir>/eval_<checkpoint
    name>_<split>``, e.g. ``runs/x/eval_best_val``). One that already holds results is refused
    unless ``--overwrite``."""
    overwrite: bool = False
    """Replace the results already in the output folder (refused without it)."""


def require_positive(command: str, **values: int | None) -> None:
    """Exit with a message naming the flag and a value that works when a setting is below 1
    (``None``: unset, accepted)."""
    for name, value in values.items():
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise SystemExit(f"{command}: error: {flag} must be >= 1, got {value}; pass e.g. "
                             f"{flag} {20 if name == 'num_clicks' else 64}.")


def flat_settings(cfg: Any) -> dict[str, Any]:
    """A command config's settings by flag name, sections flattened, in declaration order: what
    a command records of its own config (the same dict as before the sections)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            out.update(flat_settings(value))
        else:
            out[f.name] = value
    return out
