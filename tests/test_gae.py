"""compute_gae (ppo/gae.py) against a plain-Python reference, over a grid of settings."""

from __future__ import annotations

import itertools

import pytest
import torch

from ppo.gae import compute_gae
from tests.sync_guard import forbid_host_sync


def reference_gae(reward, value, next_value, terminated, done, gamma, lam):
    """Forward-sum definition, one scalar at a time: A_t = sum_k (gamma lam)^k delta_{t+k},
    summed until the episode's last step (the first done at or after t)."""
    T, B = reward.shape
    r, v, nv = reward.tolist(), value.tolist(), next_value.tolist()
    term, dn = terminated.tolist(), (done | terminated).tolist()
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        def delta(t):
            bootstrap = 0.0 if term[t][b] else gamma * nv[t][b]
            return r[t][b] + bootstrap - v[t][b]

        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                total += weight * delta(k)
                if dn[k][b]:
                    break
                weight *= gamma * lam
            adv[t][b] = total
    adv = torch.tensor(adv, dtype=torch.float64)
    return adv, adv + value.double()


def _rollout(T, B, seed, p_done=0.3):
    gen = torch.Generator().manual_seed(seed)
    reward = torch.randn(T, B, generator=gen)
    value = torch.randn(T, B, generator=gen)
    next_value = torch.randn(T, B, generator=gen)
    done = torch.rand(T, B, generator=gen) < p_done
    terminated = done & (torch.rand(T, B, generator=gen) < 0.5)
    return reward, value, next_value, terminated, done


@pytest.mark.parametrize(
    "gamma, lam, T, B",
    list(itertools.product([0.0, 0.9, 0.99, 1.0], [0.0, 0.5, 0.95, 1.0], [1, 5, 16], [1, 7])),
)
def test_matches_reference(gamma, lam, T, B):
    args = _rollout(T, B, seed=T * 100 + B)
    adv, target = compute_gae(*args, gamma=gamma, lam=lam)
    ref_adv, ref_target = reference_gae(*args, gamma, lam)
    assert adv.shape == target.shape == (T, B)
    torch.testing.assert_close(adv.double(), ref_adv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(target.double(), ref_target, atol=1e-5, rtol=1e-5)


def test_mixed_truncation_termination_and_resets_by_hand():
    """Column 0: truncated at t=1, reset, terminated at t=3. Column 1: one long episode."""
    gamma, lam = 0.9, 0.8
    reward = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [3.0, 1.0]])
    value = torch.tensor([[0.5, 0.0], [0.2, 0.0], [0.1, 0.0], [0.4, 0.0]])
    next_value = torch.tensor([[0.2, 0.0], [7.0, 0.0], [0.4, 0.0], [9.0, 2.0]])  # 7: final obs
    done = torch.tensor([[False, False], [True, False], [False, False], [True, False]])
    terminated = torch.tensor([[False, False], [False, False], [False, False], [True, False]])
    adv, target = compute_gae(reward, value, next_value, terminated, done, gamma, lam)

    d1 = 2.0 + gamma * 7.0 - 0.2            # truncated: bootstraps from the final observation
    d0 = 1.0 + gamma * 0.2 - 0.5
    d3 = 3.0 - 0.4                          # terminated: no bootstrap (next_value 9 unused)
    d2 = 0.0 + gamma * 0.4 - 0.1
    expected0 = [d0 + gamma * lam * d1, d1, d2 + gamma * lam * d3, d3]  # nothing crosses t=1
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected0))
    # column 1: only the last step has reward and a bootstrap, rollout ends without done
    d_last = 1.0 + gamma * 2.0
    expected1 = [(gamma * lam) ** (3 - t) * d_last for t in range(4)]
    torch.testing.assert_close(adv[:, 1], torch.tensor(expected1))
    torch.testing.assert_close(target, adv + value)


def test_later_episodes_do_not_leak_backwards():
    reward, value, next_value, terminated, done = _rollout(8, 4, seed=7, p_done=0.0)
    done[3] = True
    adv, _ = compute_gae(reward, value, next_value, terminated, done, 0.99, 0.95)
    reward[4:] += 100.0
    value[4:] -= 5.0
    adv2, _ = compute_gae(reward, value, next_value, terminated, done, 0.99, 0.95)
    assert torch.equal(adv[:4], adv2[:4]) and not torch.equal(adv[4:], adv2[4:])


def test_terminated_without_done_still_cuts():
    reward, value, next_value, _, done = _rollout(6, 3, seed=8, p_done=0.0)
    terminated = torch.zeros_like(done)
    terminated[2] = True
    a, _ = compute_gae(reward, value, next_value, terminated, done, 0.9, 0.9)
    b, _ = compute_gae(reward, value, next_value, terminated, done | terminated, 0.9, 0.9)
    assert torch.equal(a, b)


def test_no_host_sync():
    args = _rollout(16, 32, seed=9)
    with forbid_host_sync():
        adv, target = compute_gae(*args, gamma=0.99, lam=0.95)
    assert torch.isfinite(adv).all()


def test_input_validation():
    reward, value, next_value, terminated, done = _rollout(4, 2, seed=10)
    with pytest.raises(ValueError, match="one shape"):
        compute_gae(reward, value[:3], next_value, terminated, done, 0.9, 0.9)
    with pytest.raises(TypeError, match="bool"):
        compute_gae(reward, value, next_value, terminated.float(), done, 0.9, 0.9)
    with pytest.raises(ValueError, match="gamma"):
        compute_gae(reward, value, next_value, terminated, done, 1.5, 0.9)
