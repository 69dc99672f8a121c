"""The env state, declared once: each key's name, shape, dtype, initial fill and meaning.

``ClickEnv`` (``gpu_env.env``) keeps each batch of episodes in a ``TensorDict`` with
``batch_size=[B]`` that its pure functions take and return. ``STATE`` lists its keys in the
order the state holds them; ``empty_state`` builds one from it (``ClickEnv.initial_state``
starts there, keys the rows and resets them), and code that reads the state names keys by the
constants here (``state[DICE]``), not by string.

Adding a state key is one ``StateEntry`` here plus the code that sets it in ``ClickEnv.reset``
and ``ClickEnv.step_click``.

Shapes are symbolic: ``B`` rows, ``K = max_clicks + 1`` click slots (``EnvConfig.max_points``),
``M`` the segmenter's mask size, ``S`` the observation size, ``G`` the action grid size;
``G*G`` is their product. The table (``state_table()``, checked against this docstring in
tests):

==============  ====================  ==================================================
``image_id``    ``[B]`` int64         index into the dataset
``key``         ``[B]`` int64         per-episode RNG key (SplitMix64 counter)
``points``      ``[B, K, 2]`` f32     clicks (x, y) in the segmenter's prompt frame
``labels``      ``[B, K]`` int64      SAM2 labels: 1 fg, 0 bg, -1 unused slot
``num_clicks``  ``[B]`` int64         valid slots (initial user click included)
``step``        ``[B]`` int64         agent clicks so far
``logits``      ``[B, 1, M, M]`` f32  previous low-res logits
``mask``        ``[B, M, M]`` bool    current binary mask (``logits > 0``)
``dice``        ``[B]`` f32           Dice of ``mask`` vs GT (low res)
``boundary``    ``[B]`` f32           boundary metric of ``mask`` vs GT (low res)
``heat``        ``[B, 2, S, S]`` f32  fg / bg click heatmaps
``clicked``     ``[B, G*G]`` bool     grid cells clicked so far (initial click included)
``episode``     ``[B]`` int64         episodes started in this row (for bookkeeping)
==============  ====================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
from tensordict import TensorDict

__all__ = ["BOUNDARY", "CLICKED", "DICE", "EPISODE", "HEAT", "IMAGE_ID", "KEY", "LABELS",
           "LOGITS", "MASK", "NUM_CLICKS", "POINTS", "STATE", "STATE_KEYS", "STEP", "StateEntry",
           "empty_state", "state_entry", "state_shapes", "state_table"]

IMAGE_ID = "image_id"
KEY = "key"
POINTS = "points"
LABELS = "labels"
NUM_CLICKS = "num_clicks"
STEP = "step"
LOGITS = "logits"
MASK = "mask"
DICE = "dice"
BOUNDARY = "boundary"
HEAT = "heat"
CLICKED = "clicked"
EPISODE = "episode"

SYMBOLS = ("B", "K", "M", "S", "G")
"""The size symbols a shape may name (module docstring); a dimension is an int, a symbol, or a
product of symbols written ``"G*G"``."""


@dataclass(frozen=True)
class StateEntry:
    """One state key: ``shape`` in the size symbols (``("B", "K", 2)``), the ``dtype`` it is
    held in, and the value ``empty_state`` fills it with (``reset`` overwrites every key of a
    reset row; ``episode``'s fill -1 makes the first reset's count 0)."""

    name: str
    meaning: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype
    fill: int | float = 0

    def __post_init__(self):
        for dim in self.shape:
            if isinstance(dim, str) and any(s not in SYMBOLS for s in dim.split("*")):
                raise ValueError(f"state key {self.name!r}: unknown size symbol in {dim!r}; the "
                                 f"symbols are {', '.join(SYMBOLS)}")

    def resolve(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape for ``sizes`` (a value for each symbol the shape names)."""
        return tuple(dim if isinstance(dim, int) else prod(sizes[s] for s in dim.split("*"))
                     for dim in self.shape)


STATE: tuple[StateEntry, ...] = (
    StateEntry(IMAGE_ID, "index into the dataset", ("B",), torch.int64),
    StateEntry(KEY, "per-episode RNG key (SplitMix64 counter)", ("B",), torch.int64),
    StateEntry(POINTS, "clicks (x, y) in the segmenter's prompt frame", ("B", "K", 2),
               torch.float32),
    StateEntry(LABELS, "SAM2 labels: 1 fg, 0 bg, -1 unused slot", ("B", "K"), torch.int64,
               fill=-1),
    StateEntry(NUM_CLICKS, "valid slots (initial user click included)", ("B",), torch.int64),
    StateEntry(STEP, "agent clicks so far", ("B",), torch.int64),
    StateEntry(LOGITS, "previous low-res logits", ("B", 1, "M", "M"), torch.float32),
    StateEntry(MASK, "current binary mask (``logits > 0``)", ("B", "M", "M"), torch.bool),
    StateEntry(DICE, "Dice of ``mask`` vs GT (low res)", ("B",), torch.float32),
    StateEntry(BOUNDARY, "boundary metric of ``mask`` vs GT (low res)", ("B",), torch.float32),
    StateEntry(HEAT, "fg / bg click heatmaps", ("B", 2, "S", "S"), torch.float32),
    StateEntry(CLICKED, "grid cells clicked so far (initial click included)", ("B", "G*G"),
               torch.bool),
    StateEntry(EPISODE, "episodes started in this row (for bookkeeping)", ("B",), torch.int64,
               fill=-1),
)
"""Every state key, in the order the state holds them."""

STATE_KEYS: tuple[str, ...] = tuple(e.name for e in STATE)


def state_entry(name: str) -> StateEntry:
    """The entry of key ``name``; ``KeyError`` naming the keys that exist otherwise."""
    for e in STATE:
        if e.name == name:
            return e
    raise KeyError(f"no state key {name!r}; the keys are {', '.join(STATE_KEYS)}")


def state_shapes(batch_size: int, *, max_points: int, mask_size: int, obs_size: int,
                 grid_size: int) -> dict[str, tuple[int, ...]]:
    """Each key's concrete shape, in ``STATE`` order (``max_points``: ``EnvConfig.max_points``,
    ``mask_size``: the segmenter's)."""
    sizes = {"B": batch_size, "K": max_points, "M": mask_size, "S": obs_size, "G": grid_size}
    return {e.name: e.resolve(sizes) for e in STATE}


def empty_state(batch_size: int, *, max_points: int, mask_size: int, obs_size: int,
                grid_size: int, device: torch.device | str = "cpu") -> TensorDict:
    """A state of ``batch_size`` rows holding each entry's ``fill`` (no episode started yet:
    ``ClickEnv.reset`` of every row makes it a valid state)."""
    shapes = state_shapes(batch_size, max_points=max_points, mask_size=mask_size,
                          obs_size=obs_size, grid_size=grid_size)
    return TensorDict(
        {e.name: torch.full(shapes[e.name], e.fill, dtype=e.dtype, device=device) for e in STATE},
        batch_size=[batch_size],
        device=device,
    )


_DTYPE_NAMES = {torch.float32: "f32", torch.int64: "int64", torch.bool: "bool"}


def state_table() -> str:
    """The reStructuredText table of the state keys (name, shape and dtype, meaning)."""
    rows = [(f"``{e.name}``",
             f"``[{', '.join(str(d) for d in e.shape)}]`` {_DTYPE_NAMES.get(e.dtype, str(e.dtype))}",
             e.meaning) for e in STATE]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    rule = "  ".join("=" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([rule, *body, rule])
