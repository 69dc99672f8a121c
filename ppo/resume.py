"""Resuming a run: the checkpoint must be a training checkpoint whose config matches this one.

A checkpoint continues bit-identically only under the settings that made it. Every setting that
shapes the model, the env, the data or the optimizer must therefore match the checkpoint's
config; a few only say how long to train, how often to log, evaluate or checkpoint, or where the
run lives, and may change (``SAFE_TO_CHANGE``).

The comparison runs over the config flattened to dotted leaf names (``grid_size``, or
``env.grid_size`` in a config of nested sections), and ``SAFE_TO_CHANGE`` is keyed by the leaf
name, so it holds however the settings are grouped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ppo.checkpoint import CheckpointError, load_checkpoint

__all__ = ["SAFE_TO_CHANGE", "ResumeError", "check_compatible", "check_steps_left",
           "config_differences", "flatten_config", "load_for_resume"]

SAFE_TO_CHANGE = frozenset({
    "total_timesteps",  # train longer (or shorter)
    "log_every", "checkpoint_every", "keep_checkpoints", "eval_every",  # cadence
    "eval_clicks",  # clicks of the final evaluation only (best.pt uses max_clicks)
    "tensorboard", "progress",  # logging and progress bars
    "exp_name", "out_dir", "resume", "overwrite",  # where the run lives, how it starts
    "compile",  # the compiled path is checked against eager (bench/bench_train.py)
    "shard_data",  # Trainer.load re-keys rows and samplers for other shards/world sizes
})
"""Leaf names of settings a resumed run may change."""

TRAINING_KEYS = ("model", "optimizer", "counters", "config")
"""What a training checkpoint (``ppo.train.Trainer.state_dict``) holds at least."""


def _device_kind(name: Any) -> Any:
    """``auto``/``cuda:N``/``cpu`` -> the device type a run uses: generator states and
    rollouts are tied to it, not to a GPU's index."""
    if not isinstance(name, str):
        return name
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name.split(":")[0]


NORMALISE: dict[str, Callable[[Any], Any]] = {"device": _device_kind}
"""Leaf names compared after a normalisation (the values shown are the raw ones)."""


class ResumeError(ValueError):
    """A checkpoint cannot continue under this config; the message names each difference."""


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted name: leaf value}`` of a config dataclass or mapping, nested sections
    included (``{"env": {"grid_size": 32}}`` -> ``{"env.grid_size": 32}``)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        nested = (dataclasses.is_dataclass(value) and not isinstance(value, type)) or (
            isinstance(value, Mapping) and value)
        if nested:
            out.update(flatten_config(value, prefix=name + "."))
        else:
            out[name] = value
    return out


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]
                       ) -> list[tuple[str, Any, Any]]:
    """``(dotted name, saved value, current value)`` for every setting that differs and is not
    in ``SAFE_TO_CHANGE`` (a setting present on one side only counts, as ``<absent>``)."""
    missing = "<absent>"
    flat_saved, flat_current = flatten_config(saved), flatten_config(current)
    diffs = []
    for name in sorted(flat_saved.keys() | flat_current.keys()):
        leaf = _leaf(name)
        if leaf in SAFE_TO_CHANGE:
            continue
        old, new = flat_saved.get(name, missing), flat_current.get(name, missing)
        norm = NORMALISE.get(leaf, lambda v: v)
        if norm(old) != norm(new):
            diffs.append((name, old, new))
    return diffs


def _flag(name: str) -> str:
    """The command-line flag of a setting (flags are the leaf names, unique across sections;
    a section's ``kind`` is the flag named after its section: ``--policy``, ``--segmenter``)."""
    leaf = _leaf(name)
    if leaf == "kind" and "." in name:
        leaf = name.rsplit(".", 2)[-2]
    return "--" + leaf.replace("_", "-")


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any],
                     checkpoint: str | os.PathLike) -> None:
    """Raise ``ResumeError`` naming every setting (both values) that differs between the
    checkpoint's config and this run's, beyond ``SAFE_TO_CHANGE``."""
    diffs = config_differences(saved, current)
    if not diffs:
        return
    lines = "\n".join(f"  {name}: checkpoint {old!r}, now {new!r}" for name, old, new in diffs)
    example = " ".join(f"{_flag(n)} {o}" for n, o, _ in diffs[:2] if not isinstance(o, bool))
    raise ResumeError(
        f"cannot resume from {checkpoint}: {len(diffs)} setting(s) that shape the model, env, "
        f"data or optimizer differ from the checkpoint's:\n{lines}\n"
        f"Resume with the checkpoint's values (drop these flags"
        + (f", or pass {example}" if example else "") + "), or start a new run without "
        f"--resume (another --exp-name, or --overwrite to replace this one). Settings that may "
        f"change on resume: {', '.join(sorted(SAFE_TO_CHANGE))}.")


def _json_roundtrip(d: Mapping[str, Any]) -> dict[str, Any]:
    """Compare both sides as they are stored (tuples become lists, paths strings)."""
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def check_steps_left(counters: Mapping[str, Any], config: Any,
                     checkpoint: str | os.PathLike) -> None:
    """Say what a resume trains when ``config``'s ``--total-timesteps`` leaves nothing to train:
    a checkpoint past it is refused (``ResumeError``: it would silently train nothing and keep
    more iterations than asked); one exactly at it (a finished run, resumed to evaluate it
    again, as ``sam2click-seeds`` does for a seed interrupted during its evaluation) warns."""
    ppo = getattr(config, "ppo", None)
    if ppo is None:
        return
    done, steps = int(counters["iteration"]), int(counters["global_step"])
    if done < ppo.num_iterations:
        return
    asked = (f"--total-timesteps {ppo.total_timesteps} asks for {ppo.num_iterations} iteration(s) "
             f"of {ppo.batch_size} env steps (--num-envs x --num-steps)")
    longer = f"pass --total-timesteps {steps + ppo.batch_size} or more to train longer"
    if done == ppo.num_iterations:
        warnings.warn(f"nothing to train: {checkpoint} has trained all {done} iteration(s) that "
                      f"{asked}; only the evaluation runs ({longer}).", UserWarning, stacklevel=3)
        return
    raise ResumeError(
        f"nothing to train: {checkpoint} has trained {done} iteration(s) ({steps} env steps), "
        f"more than {asked}. To train longer, {longer}; to evaluate it, run "
        f"`sam2click-evaluate --checkpoint {checkpoint}`.")


def load_for_resume(path: str | os.PathLike, config: Any,
                    map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load ``path`` for resuming a run of ``config`` (a config dataclass with ``to_dict``
    and ``from_dict``, e.g. ``TrainConfig``) and check it can continue under it.

    Raises:
        CheckpointError: ``path`` is missing, unreadable, or not a training checkpoint.
        ResumeError: the configs differ in settings that must match (each one named).
    """
    state = load_checkpoint(path, map_location=map_location)
    missing = [k for k in TRAINING_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{str(path)!r} is a checkpoint but not one of a training run (it has no "
            f"{', '.join(missing)}): resume from a run's last.pt, best.pt or ckpt_<iter>.pt.")
    try:
        saved = type(config).from_dict(json.loads(state["config"])).to_dict()
    except (TypeError, ValueError) as err:
        raise ResumeError(
            f"cannot resume from {path}: its config cannot be read by this version "
            f"({err}); start a new run, or resume with the version that wrote it.") from err
    check_compatible(_json_roundtrip(saved), _json_roundtrip(config.to_dict()), path)
    check_steps_left(state["counters"], config, path)
    return state
