"""Settings several commands share, each declared once, with one default and one docstring.

Each is a small frozen section. A command's config composes the sections it needs, as
``ppo.config.TrainConfig`` composes its own; the commands parse with
``tyro.conf.OmitArgPrefixes``, so a section's fields stay flat flags (``--device``, not
``--device.device``) and every documented flag keeps its name. Training's ``RunConfig`` inherits
``DeviceConfig``, ``OverwriteConfig`` and ``ProgressConfig`` instead of composing them, so the
config saved with every run and its checkpoints keeps its flat ``run`` section (the same keys
and values). A command that needs another default passes its own instance as the field's default
and says why (``sam2click-render episodes`` runs on the CPU by default; ``tyro.MISSING`` makes a
setting required, as ``sam2click-evaluate``'s ``--checkpoint``).

``command_registry`` adapts a shared declaration to one command without declaring it again:
older flag names kept as aliases (``sam2click-embed --config`` for ``--sam2-config``), and
``overrides_of``, the settings of a saved run's section that a command may change
(``sam2click-evaluate --eval-split``; unset: the run's own value).

Settings that share a name but not a meaning keep their own declarations (``tools/arch_counts.py``
lists them with the reason): ``--batch-size`` (``EpisodesConfig``: episodes evaluated at once;
``sam2click-embed``: images per encoder forward), ``--seed`` (the run's; an evaluation's random
baseline; ``sam2click-render dataset``'s synthetic generator), ``--out`` (a results folder, a cache
directory, one PNG, a folder of PNGs), ``--overwrite`` (``OverwriteConfig``: replace what an output
folder holds instead of refusing; ``sam2click-embed``: re-encode a sound cache, which it would
otherwise keep), ``--count`` (``sam2click-embed``: synthetic images generated;
``sam2click-render dataset``: frames shown) and ``sam2click-bench``'s ``--compile`` and
``--out-dir`` (the benchmark's, not a training run's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Optional

import tyro
from tyro.constructors import (ConstructorRegistry, StructConstructorSpec, StructFieldSpec,
                               StructTypeInfo)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DeviceConfig:
    """Where the command runs."""

    device: str = "auto"
    """auto (a GPU if there is one, else the CPU), cpu, cuda or cuda:N."""

    def resolve(self) -> torch.device:
        """The torch device; ``ppo.factory.DeviceError`` says why a named one cannot be used."""
        from ppo.factory import resolve_device  # ppo.factory imports ppo.config, which imports this

        return resolve_device(self.device)


@dataclass(frozen=True)
class ProgressConfig:
    """What a long command shows while it works."""

    progress: bool = True
    """Show a progress bar."""


@dataclass(frozen=True)
class OverwriteConfig:
    """Whether a command may replace the outputs already in its output folder."""

    overwrite: bool = False
    """Replace the outputs already in the output folder instead of refusing to. Training deletes
    the earlier run's checkpoints, config.json, progress.csv, eval/ and TensorBoard files, and
    nothing else; the scoring commands replace results.json, results.csv and
    dice_vs_clicks.png."""


@dataclass(frozen=True)
class SplitConfig:
    """The one dataset split a command loads."""

    split: str = "all"
    """Dataset split: train, val, test or all (every image; for the synthetic dataset a fourth
    set of its own)."""


@dataclass(frozen=True)
class AgentConfig:
    """The trained agent a command loads."""

    checkpoint: str | None = None
    """Agent checkpoint written by sam2click-train: best.pt, last.pt or ckpt_<iteration>.pt.
    sam2click-render episodes draws the oracle clicker without one."""


@dataclass(frozen=True)
class EpisodesConfig:
    """The evaluation episodes of a command that scores clickers (evaluate, baselines)."""

    num_clicks: int = 20
    """Clicks per episode, the initial one included; NoC@85 and NoC@90 count up to this many."""
    batch_size: int = 64
    """Episodes evaluated at once."""
    seed: int = 0
    """Seed of the random clicker (in sam2click-baselines also of the learned clicker's
    training)."""

    def check(self, command: str) -> None:
        """Refuse values that cannot work, before any loading (see ``require_positive``)."""
        require_positive(command, batch_size=self.batch_size, num_clicks=self.num_clicks)


@dataclass(frozen=True)
class ResultsConfig(OverwriteConfig):
    """Where a command that scores clickers writes results.json/csv and dice_vs_clicks.png."""

    out: Path | None = None
    """Output folder. sam2click-evaluate's default is beside the checkpoint:
    <checkpoint folder>/eval_<checkpoint name>_<split>, e.g. runs/x/eval_best_val. A folder
    that already holds results is refused unless --overwrite."""


class Overrides(dict):
    """The settings of a saved run's section that a command line changed, ``{name: value}``;
    a setting not given keeps the run's value. Make one with ``overrides_of``."""

    section: ClassVar[type]
    names: ClassVar[tuple[str, ...]]


def overrides_of(section: type, *names: str) -> type[Overrides]:
    """The ``Overrides`` type of ``names`` of ``section``: parsed (by ``command_registry``) as one
    flag per name with the section's type, docstring and flag name, default None (the run's)."""
    known = {f.name for f in fields(section)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{section.__name__} has no settings {unknown}")
    return type(f"{section.__name__}Overrides", (Overrides,), {"section": section, "names": names})


def command_registry(aliases: dict[type, dict[str, tuple[str, ...]]] | None = None
                     ) -> ConstructorRegistry:
    """The tyro registry of a command's ``tyro.cli(..., registry=...)``: ``aliases[cls][name]``
    are more flags of setting ``name`` of section ``cls`` in this command only, and every
    ``Overrides`` type (``overrides_of``) becomes its optional flags."""
    aliases = aliases or {}
    registry = ConstructorRegistry()
    busy: list[type] = []  # the section whose own spec is being built (no recursion into us)

    def spec_of(cls: type, default: Any) -> StructConstructorSpec:
        busy.append(cls)
        try:
            spec = ConstructorRegistry.get_struct_spec(StructTypeInfo.make(cls, default, False))
        finally:
            busy.pop()
        assert isinstance(spec, StructConstructorSpec), spec
        return spec

    @registry.struct_rule
    def rule(info: StructTypeInfo) -> StructConstructorSpec | None:
        cls = info.type
        if not isinstance(cls, type) or cls in busy:
            return None
        if issubclass(cls, Overrides) and cls is not Overrides:
            home = {f.name: f for f in spec_of(cls.section, tyro.MISSING).fields}
            flags = []
            for name in cls.names:
                text = home[name].helptext
                text = text() if callable(text) else text
                flags.append(StructFieldSpec(name, Optional[home[name].type], None,
                                             f"{text} Unset: the saved run's value."))
            return StructConstructorSpec(
                lambda **given: cls({k: v for k, v in given.items() if v is not None}),
                tuple(flags))
        if cls in aliases:
            spec = spec_of(cls, info.default)
            more = aliases[cls]
            return dataclasses.replace(spec, fields=tuple(
                dataclasses.replace(f, type=Annotated[f.type, tyro.conf.arg(aliases=more[f.name])])
                if f.name in more else f for f in spec.fields))
        return None

    return registry


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
