"""Per-row RNG keys: every (seed, row) pair starts its own stream; seeds out of range refuse."""

import pytest
import torch

from gpu_env import rng


def test_row_keys_distinct_over_seed_row_grid():
    rows = torch.arange(64)
    keys = torch.stack([rng.row_keys(s, rows) for s in range(64)])  # [seed, row]
    assert keys.unique().numel() == keys.numel()
    # The old symmetric mix gave seed s / row r the key of seed r+1 / row s-1.
    assert not torch.equal(rng.row_keys(3, torch.tensor([5])), rng.row_keys(6, torch.tensor([2])))


def test_row_key_streams_distinct():
    rows = torch.arange(16)
    draws = []
    for s in range(16):
        key = rng.row_keys(s, rows)
        for _ in range(3):
            key, bits = rng.advance(key)
            draws.append(bits)
    d = torch.cat(draws)
    assert d.unique().numel() == d.numel()


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70])
def test_row_keys_refuse_out_of_range_seed(seed):
    with pytest.raises(ValueError, match="out of range"):
        rng.row_keys(seed, torch.arange(2))


def test_row_keys_accept_extremes():
    k = rng.row_keys(2**63 - 1, torch.arange(4))
    assert k.unique().numel() == 4
    with pytest.raises(TypeError):
        rng.row_keys(1.5, torch.arange(2))
