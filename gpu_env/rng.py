"""Counter-based per-episode randomness (SplitMix64 on int64 tensors).

Each batch row carries its own 64-bit key in the env state, so what a row draws depends only
on its own history: partial resets of other rows, the batch size and the device never change
it, and the global torch RNG is never touched. SplitMix64 (Steele et al., 2014) passes BigCrush;
int64 multiplication wraps modulo 2**64 on CPU and CUDA, and logical right shifts are
emulated by masking after the arithmetic shift.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB
_NONNEG = 0x7FFF_FFFF_FFFF_FFFF


def _shr(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 tensors."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix(x: Tensor) -> Tensor:
    """SplitMix64 finaliser: a bijective int64 -> int64 hash."""
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def advance(key: Tensor) -> tuple[Tensor, Tensor]:
    """One SplitMix64 step: returns ``(next_key, random_int64)``."""
    key = key + _GOLDEN
    return key, mix(key)


SEED_LIMIT = 1 << 63
"""Seeds are integers in ``[0, 2**63)``: one int64 key, no silent wrap-around."""


def check_seed(seed: object) -> int:
    """``seed`` as an int in ``[0, 2**63)``, or a ``ValueError``/``TypeError`` that says so
    (a larger or negative seed would otherwise wrap silently onto another seed's streams)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer in [0, 2**63), got {seed!r} "
                        f"({type(seed).__name__})")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"seed {int(seed)} is out of range: expected 0 <= seed < 2**63 "
                         "(a 64-bit key); pass a smaller non-negative seed.")
    return int(seed)


def row_keys(seed: int, rows: Tensor) -> Tensor:
    """Initial keys for batch rows ``rows`` (int64, ``>= 0``) under ``seed`` (``[0, 2**63)``).

    The row index walks SplitMix64's Weyl sequence from the seed's own origin
    (``mix(seed) + (row + 1) * golden``), so the map is not symmetric in seed and row: each
    (seed, row) pair starts its own stream, and for one seed distinct rows give distinct keys
    (``golden`` is odd, so ``row -> row * golden`` is a bijection modulo 2**64)."""
    origin = mix(torch.full_like(rows, check_seed(seed)))
    return mix(origin + (rows + 1) * _GOLDEN)


def randint_below(bits: Tensor, n: int | Tensor) -> Tensor:
    """Map random int64 ``bits`` to ``[0, n)`` (modulo bias < n / 2**63, negligible)."""
    return torch.remainder(bits & _NONNEG, n)


def uniform(bits: Tensor) -> Tensor:
    """Map random int64 ``bits`` to float32 in ``[0, 1)`` (24 random bits)."""
    return _shr(bits, 40).to(torch.float32) * (1.0 / (1 << 24))
