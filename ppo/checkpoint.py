"""Checkpoints: atomic writes, safe loads, training-state capture, and a keeping policy.

A checkpoint file is ``torch.save({"format": FORMAT, "state": state})``. ``state`` holds only
what ``torch.load(weights_only=True)`` accepts (tensors, numbers, strings, lists, dicts,
None): generator states are uint8 tensors, the run config is a JSON string, counters are
ints. Optimizer and LR-scheduler ``state_dict``s are already of that kind (a ``LambdaLR``
stores ``None`` for plain-function lambdas).

Writes go through :func:`sam_batch.atomic_io.atomic_write` (temporary file, fsync, rename,
directory fsync): a crash leaves either the old file or the new one, never a mix, and no
temporary file survives an exception.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sam_batch.atomic_io import DiskFullError, atomic_write, fsync_dir, is_disk_full, unlink_quietly

__all__ = [
    "FORMAT",
    "CheckpointError",
    "CheckpointKeeper",
    "capture_generators",
    "capture_training_state",
    "load_checkpoint",
    "restore_generators",
    "restore_training_state",
    "save_checkpoint",
]

FORMAT = "sam2-click-rl/checkpoint-v1"
_PERIODIC = re.compile(r"ckpt_(\d+)\.pt")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or not one of ours (the message names it)."""


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Atomically write ``state`` to ``path`` (parent directories are created).

    The state is serialised in memory first and then written with ordinary file writes, so a
    full disk raises :class:`~sam_batch.atomic_io.DiskFullError` naming the path (and leaves the
    previous file intact) instead of a serializer error.
    """
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "state": dict(state)}, buf)
    return atomic_write(path, lambda f: f.write(buf.getbuffer()), binary=True, what="checkpoint")


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _unpickler_reason(err: BaseException) -> str:
    """What PyTorch's weights-only unpickler objected to, without its advice on how to load
    the file unsafely (``weights_only=False``, ``add_safe_globals``): that advice is exactly
    what a checkpoint of unknown origin must not get."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip()
        reason = reason.split("Please use", 1)[0].split("Check the documentation", 1)[0]
        reason = " ".join(reason.split()).rstrip(". ")
        if reason:
            return reason
    return "not a pickle of tensors and plain data"


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: naming ``path``, if it is missing, truncated/corrupt, holds objects
            that are not plain data, or was not written by ``save_checkpoint``.
    """
    path = Path(path)
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.pt")) if path.parent.is_dir() else []
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist"
            + (f"; {path.parent} has: {', '.join(others)}" if others else "")
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint written by sam2click-train: it is corrupt, or "
            f"holds objects other than tensors and plain data ({_unpickler_reason(err)}), and "
            f"such a file is never unpickled because that could run code from it. Use a "
            f"checkpoint written by sam2click-train (last.pt, best.pt or a ckpt_<iter>.pt)."
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt ({type(err).__name__}: "
            f"{_first_line(err)}); it may come from an interrupted copy. Use another one "
            "(last.pt, best.pt or a ckpt_<iter>.pt in the same directory)."
        ) from err
    except Exception as err:  # e.g. a text file: the unpickler fails on its bytes (KeyError)
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint (PyTorch cannot read it: "
            f"{type(err).__name__}); pass a .pt file written by sam2click-train (last.pt, "
            f"best.pt or a ckpt_<iter>.pt)."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a torch file but not a checkpoint of format {FORMAT!r}"
        )
    return payload["state"]


# ---- training state ------------------------------------------------------------------------

def capture_generators(generators: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """``{name: uint8 state tensor}`` (CPU copies, also for CUDA generators)."""
    return {name: g.get_state().clone() for name, g in generators.items()}


def restore_generators(
    generators: Mapping[str, torch.Generator], states: Mapping[str, torch.Tensor]
) -> None:
    """Set each named generator's state; the two name sets must match exactly."""
    missing, extra = set(generators) - set(states), set(states) - set(generators)
    if missing or extra:
        raise CheckpointError(
            f"generator names differ from the checkpoint's: missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}"
        )
    for name, g in generators.items():
        g.set_state(states[name].to(device="cpu", dtype=torch.uint8))


def _config_json(config: Any) -> str:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.dumps(config, sort_keys=True, default=str)


def capture_training_state(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    counters: Mapping[str, int] | None = None,
    config: Any = None,
) -> dict[str, Any]:
    """Everything a run needs to resume bit-for-bit, as ``weights_only``-loadable data.

    ``config``: a dataclass instance or a JSON-serialisable mapping, stored as a JSON string.
    """
    return {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "generators": capture_generators(generators or {}),
        "counters": {k: int(v) for k, v in (counters or {}).items()},
        "config": _config_json(config),
    }


def restore_training_state(
    state: Mapping[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> tuple[dict[str, int], Any]:
    """Load ``capture_training_state``'s output into live objects; returns ``(counters, config)``."""
    model.load_state_dict(state["model"])
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None:
            if state.get(name) is None:
                raise CheckpointError(f"the checkpoint has no {name} state to restore")
            obj.load_state_dict(state[name])
    restore_generators(generators or {}, state.get("generators", {}))
    return dict(state.get("counters", {})), json.loads(state.get("config", "null"))


# ---- keeping policy -----------------------------------------------------------------------

class CheckpointKeeper:
    """Writes ``last.pt`` every save, ``ckpt_<iter>.pt`` every ``every`` iterations (keeping the
    newest ``keep_last``), and ``best.pt`` when ``metric`` improves (higher is better unless
    ``mode="min"``). Periodic, last and best files are hard links to one write when the file
    system allows it (a copy otherwise); every file appears atomically.
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3, every: int = 1,
                 mode: str = "max") -> None:
        if keep_last < 0 or every < 1 or mode not in ("max", "min"):
            raise ValueError(
                f"need keep_last >= 0, every >= 1, mode in ('max', 'min'); got "
                f"keep_last={keep_last}, every={every}, mode={mode!r}"
            )
        self.directory = Path(directory)
        self.keep_last, self.every, self.mode = keep_last, every, mode
        self.best_metric: float | None = None

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def periodic(self) -> list[Path]:
        """Existing ``ckpt_<iter>.pt`` files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir()
                 if (m := _PERIODIC.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def _improves(self, metric: float) -> bool:
        if self.best_metric is None:
            return True
        return metric > self.best_metric if self.mode == "max" else metric < self.best_metric

    def save(self, iteration: int, state: Mapping[str, Any], metric: float | None = None) -> Path:
        """Save ``state`` (``metric``: a host float, e.g. mean eval Dice). Returns ``last.pt``.

        The keeper's own state (``best_metric``) is stored under ``"keeper"`` so that
        ``load_state_dict`` can resume the best-so-far comparison.
        """
        improves = metric is not None and self._improves(float(metric))
        best_metric = float(metric) if improves else self.best_metric
        state = {**state, "keeper": {"iteration": int(iteration), "best_metric": best_metric}}
        save_checkpoint(self.last, state)
        if self.keep_last and iteration % self.every == 0:
            self._link(self.last, self.directory / f"ckpt_{iteration:08d}.pt")
            for old in self.periodic()[:-self.keep_last]:
                old.unlink()
        if improves:
            self._link(self.last, self.best)
            self.best_metric = best_metric
        return self.last

    def _link(self, source: Path, target: Path) -> None:
        # os.replace of a fresh link is atomic; the linked inode is never written again
        # because every write above goes through a new temporary file.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            os.unlink(tmp)
            try:
                os.link(source, tmp)
            except OSError:  # no hard links on this file system
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException as err:
            unlink_quietly(tmp)
            if is_disk_full(err):
                raise DiskFullError(
                    err.errno, f"no space left on the device holding {self.directory}: copying "
                    f"{source.name} to {target.name} failed and nothing was replaced "
                    f"({source.name} and the previous {target.name}, if any, are intact). Free "
                    f"some space and resume from {source}.") from err
            raise
        fsync_dir(self.directory)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the best-metric bookkeeping from a loaded checkpoint's state."""
        self.best_metric = state.get("keeper", {}).get("best_metric")
