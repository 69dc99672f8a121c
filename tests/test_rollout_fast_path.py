"""The rollout's lockstep fast path (one forward and no reset on steps where no episode can
end) against the general path that bootstraps and resets every step: bitwise the same."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import ppo.train as train_mod
from ppo.rollout import shared_phase
from ppo.train import Trainer
from tests.test_train import tiny


@pytest.mark.parametrize("num_steps,max_clicks", [(5, 2), (3, 3)])
def test_lockstep_rollout_equals_general_path(tmp_path, monkeypatch, num_steps, max_clicks):
    cfg = tiny(tmp_path, "fast", num_steps=num_steps, max_clicks=max_clicks,
               total_timesteps=4 * num_steps * 3)
    fast = Trainer(cfg)
    general = Trainer(cfg.replace(exp_name="general"))
    phases = []
    for _ in range(3):  # iterations with updates between: the phase moves across rollouts
        phases.append(shared_phase(fast.env, fast.state))
        fast.iterate()
        with monkeypatch.context() as m:
            m.setattr(train_mod, "shared_phase", lambda env, state: None)
            general.iterate()
        for k in fast.buffer.keys():
            assert torch.equal(fast.buffer[k], general.buffer[k]), k
        for k in fast.state.keys():
            assert torch.equal(fast.state[k], general.state[k]), k
        assert torch.equal(fast.initial_dice, general.initial_dice)
        assert torch.equal(fast.stats.sums, general.stats.sums)
        for a, b in zip(fast.policy.parameters(), general.policy.parameters()):
            assert torch.equal(a, b)
    assert all(p is not None for p in phases)
    assert len(set(phases)) == (1 if num_steps % max_clicks == 0 else 2)


def test_shared_phase_is_none_when_rows_can_diverge(tmp_path):
    tr = Trainer(tiny(tmp_path, "p"))
    assert shared_phase(tr.env, tr.state) == 0
    tr.state["step"][0] += 1
    assert shared_phase(tr.env, tr.state) is None
    tr.state["step"][0] -= 1
    early_end = tr.env.with_config(replace(tr.env.config, target_dice=0.9))
    assert shared_phase(early_end, tr.state) is None


def test_collect_makes_no_host_read(tmp_path):
    """The phase is read once before the loop; the loop itself never reads a tensor."""
    from ppo.rollout import collect
    from tests.sync_guard import forbid_host_sync

    tr = Trainer(tiny(tmp_path, "sync", num_steps=5, max_clicks=2))
    for phase in (shared_phase(tr.env, tr.state), None):
        with forbid_host_sync():
            tr.state, tr.initial_dice = collect(tr.env, tr.state, tr.ac, tr.buffer, tr.stats,
                                                tr.initial_dice, phase)
    assert torch.isfinite(tr.buffer["next_value"]).all()
