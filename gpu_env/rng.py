"""Counter-based per-episode randomness (SplitMix64 on int64 tensors).

Each batch row carries its own 64-bit key in the env state, so what a row draws depends only
on its own history: partial resets of other rows, the batch size and the device never change
it, and the global torch RNG is never touched. SplitMix64 (Steele et al., 2014) passes BigCrush;
int64 multiplication wraps modulo 2**64 on CPU and CUDA, and logical right shifts are
emulated by masking after the arithmetic shift.
"""

from __future__ import annotations

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


def row_keys(seed: int, rows: Tensor) -> Tensor:
    """Initial keys for batch rows ``rows`` (int64) under ``seed``."""
    return mix(mix(torch.full_like(rows, int(seed) & _NONNEG)) ^ mix(rows + 1))


def randint_below(bits: Tensor, n: int | Tensor) -> Tensor:
    """Map random int64 ``bits`` to ``[0, n)`` (modulo bias < n / 2**63, negligible)."""
    return torch.remainder(bits & _NONNEG, n)


def uniform(bits: Tensor) -> Tensor:
    """Map random int64 ``bits`` to float32 in ``[0, 1)`` (24 random bits)."""
    return _shr(bits, 40).to(torch.float32) * (1.0 / (1 << 24))
