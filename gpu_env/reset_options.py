"""Gymnasium ``reset`` arguments of the click envs, checked and applied in one place.

Both vector envs (the project's ``gpu_env.gym_env.ClickGymVectorEnv`` and the prototype's
``gpu_env.vector_env.SAM2ClickVectorEnv``) and both single envs take ``seed`` as Gymnasium
does and ``options`` that are honoured with or without a seed, or refused by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from gpu_env import rng
from gpu_env.env import ClickEnv
from gpu_env.rng import SEED_LIMIT, check_seed
from gpu_env.state_spec import KEY

__all__ = ["check_options", "image_index", "reset_rows"]


def check_options(options: dict | None, allowed: tuple[str, ...]) -> dict:
    """``options`` as a dict; a key not in ``allowed`` is a ``ValueError`` naming it."""
    options = dict(options or {})
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"reset options {sorted(unknown)} are not supported; this env takes "
                         f"{', '.join(allowed)}.")
    return options


def image_index(value: Any, n: int, rows: int) -> np.ndarray:
    """``options["image_index"]``: an int, or one int per row, each in ``[0, n)`` (floats,
    strings and booleans are refused, not coerced)."""
    a = np.asarray(value)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"options['image_index'] must be an integer (or one per env) in "
                        f"[0, {n}), got {value!r}.")
    a = np.broadcast_to(a, (rows,)) if a.ndim == 0 else a
    if a.shape != (rows,):
        raise ValueError(f"options['image_index'] must be one integer or {rows} of them, got "
                         f"shape {a.shape}.")
    if ((a < 0) | (a >= n)).any():
        raise ValueError(f"options['image_index'] {value!r} out of range: expected indices in "
                         f"[0, {n}) (the dataset's images).")
    return a.astype(np.int64)


def _keys(seed: Any, B: int, device: torch.device) -> torch.Tensor:
    """Row keys of ``seed``: an int keys row ``i`` as ``initial_state(B, seed)`` does; a list
    keys row ``i`` as a single env reset with ``seed[i]``."""
    if isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != B:
            raise ValueError(f"seed list has {len(seed)} entries; expected one per env ({B}).")
        zero = torch.zeros(1, dtype=torch.int64, device=device)
        return torch.cat([rng.row_keys(check_seed(int(s)), zero) for s in seed])
    return rng.row_keys(check_seed(seed), torch.arange(B, device=device))


def reset_rows(env: ClickEnv, state: TensorDict | None, B: int, seed: Any, options: dict,
               np_random: np.random.Generator) -> TensorDict:
    """The state after a Gymnasium ``reset(seed=..., options=...)`` of ``B`` rows: the rows of
    ``options["reset_mask"]`` (default: all) start new episodes, re-keyed by ``seed`` when one
    is given, on ``options["image_index"]`` when given; other rows are left bitwise as they are."""
    dev = env.device
    rows = np.ones(B, dtype=np.bool_)
    if "reset_mask" in options:
        rows = np.asarray(options["reset_mask"])
        if rows.dtype != np.bool_ or rows.shape != (B,):
            raise ValueError(f"options['reset_mask'] must be bool of shape ({B},), got "
                             f"{rows.dtype} {rows.shape}")
    ids = None
    if "image_index" in options:
        ids = torch.from_numpy(image_index(options["image_index"], env.num_images, B)).to(dev)
    if state is None:
        state = env.initial_state(B, int(np_random.integers(0, SEED_LIMIT)))
    state = state.clone(recurse=False)
    rows_t = torch.from_numpy(rows).to(dev)
    if seed is not None:  # reset advances the key once, as initial_state does after keying
        state[KEY] = torch.where(rows_t, _keys(seed, B, dev), state[KEY])
    return env.reset(state, rows_t, ids)
