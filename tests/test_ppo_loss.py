"""ClipPPOLoss wiring (ppo/loss.py): CleanRL parity, ratio = 1 at the start, learning
direction, one shared trunk forward, LR annealing, and no host synchronisation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from tensordict import TensorDict

from tests.sync_guard import HostSyncError, allow_host_reads, forbid_host_sync
from ppo.loss import PPOConfig, lr_at, make_ppo_loss, ppo_update, set_lr
from ppo.policies import make_actor_critic
from tests.nets import spatial

G, S = 8, 32  # a small grid and observation keep the test fast; the code is size-agnostic
A = 2 * G * G


def test_forbid_host_sync_catches_syncs():
    x = torch.ones(3)
    with forbid_host_sync():
        for sync in (lambda: x.sum().item(), lambda: bool(x.any()), lambda: x[x > 0],
                     lambda: x.tolist(), lambda: float(x[0])):
            with pytest.raises(HostSyncError):
                sync()
        y = x[torch.tensor([0, 2])] * 2  # integer gather: no sync
    assert y.tolist() == [2.0, 2.0]


def _setup(seed: int = 0, n: int = 64, cfg: PPOConfig | None = None, masked: bool = True):
    torch.manual_seed(seed)  # parameter init only; all sampling below uses `gen`
    gen = torch.Generator().manual_seed(seed)
    policy = spatial(grid_size=G, obs_size=S, width=8, dilations=(1, 2))
    ac = make_actor_critic(policy, generator=gen, use_action_mask=masked)
    obs = {"observation": torch.rand(n, 6, S, S, generator=gen)}
    if masked:
        obs["action_mask"] = torch.rand(n, A, generator=gen) > 0.3
    with torch.no_grad():
        batch = ac.policy_value(TensorDict(obs, [n]))
    batch["advantage"] = torch.randn(n, 1, generator=gen)
    batch["value_target"] = batch["state_value"] + torch.randn(n, 1, generator=gen)
    cfg = cfg or PPOConfig(num_minibatches=4, update_epochs=2)
    loss = make_ppo_loss(ac.actor, ac.critic, cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    return policy, ac, batch, loss, opt, cfg, gen


def test_ratio_is_one_on_first_minibatch():
    policy, ac, batch, loss, opt, cfg, gen = _setup()
    # the first minibatch ppo_update will draw, checked independently of the loss's outputs
    replay = torch.Generator().manual_seed(0)
    replay.set_state(gen.get_state())
    first = batch[torch.randperm(batch.numel(), generator=replay)[: batch.numel() // 4]]
    with torch.no_grad():
        new_lp = ac.actor.get_dist(first.clone()).log_prob(first["action"])
    assert (new_lp - first["action_log_prob"]).abs().max() < 1e-5

    stats = ppo_update(loss, opt, batch, cfg, generator=gen)
    assert stats.batch_size == torch.Size([cfg.update_epochs, cfg.num_minibatches])
    s0 = stats[0, 0]
    assert abs(s0["max_ratio"] - 1) < 1e-5 and abs(s0["mean_ratio"] - 1) < 1e-5
    assert abs(s0["ESS"] - 1) < 1e-5  # ESS = 1 iff all ratios are equal
    assert abs(s0["approx_kl"]) < 1e-6 and s0["clip_fraction"] == 0
    # ...and the check is able to fail: later minibatches see the updated policy
    assert (stats["max_ratio"].flatten()[1:] - 1).abs().max() > 1e-5


def test_loss_matches_cleanrl_formulas():
    cfg = PPOConfig(num_minibatches=1, update_epochs=1)
    policy, ac, batch, loss, opt, cfg, gen = _setup(cfg=cfg)
    # stale behaviour log-probs and values, so that both clips are active
    batch["action_log_prob"] = batch["action_log_prob"] + 0.3 * torch.randn(batch.shape, generator=gen)
    noise = torch.randn(batch["state_value"].shape, generator=gen)
    batch["state_value"] = batch["state_value"] + 0.5 * noise
    out = loss(batch.clone())

    dist = ac.actor.get_dist(batch.clone())
    new_lp = dist.log_prob(batch["action"])
    logratio = new_lp - batch["action_log_prob"]
    ratio = logratio.exp()
    adv = batch["advantage"].squeeze(-1)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    newvalue = ac.value(batch.clone())["state_value"].squeeze(-1)
    returns, values = batch["value_target"].squeeze(-1), batch["state_value"].squeeze(-1)
    v_clipped = values + (newvalue - values).clamp(-cfg.clip_coef, cfg.clip_coef)
    v_loss = 0.5 * torch.max((newvalue - returns) ** 2, (v_clipped - returns) ** 2).mean()
    entropy = dist.entropy().mean()

    assert torch.allclose(out["loss_objective"], pg_loss, atol=1e-5)
    assert torch.allclose(out["loss_critic"], cfg.vf_coef * v_loss, atol=1e-5)
    assert torch.allclose(out["loss_entropy"], -cfg.ent_coef * entropy, atol=1e-6)
    approx_kl = ((ratio - 1) - logratio).mean()
    assert torch.allclose(out["mean_ratio"] - 1 + out["kl_approx"], approx_kl, atol=1e-6)
    clipfrac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
    assert torch.allclose(out["clip_fraction"], clipfrac) and 0 < clipfrac < 1
    assert 0 < out["value_clip_fraction"] < 1


def test_updates_raise_log_prob_of_positive_advantage_actions():
    cfg = PPOConfig(num_minibatches=2, update_epochs=4, learning_rate=3e-3, ent_coef=0.0)
    policy, ac, batch, loss, opt, cfg, gen = _setup(cfg=cfg)
    # a learnable signal: foreground clicks were good, background clicks bad
    positive = batch["action"] < G * G
    assert 0 < positive.sum() < batch.numel()
    batch["advantage"] = torch.where(positive, 1.0, -1.0).unsqueeze(-1)

    def log_probs():
        with torch.no_grad():
            return ac.actor.get_dist(batch.clone()).log_prob(batch["action"])

    before = log_probs()
    for _ in range(3):
        # as after a fresh rollout with these actions: behaviour log-probs = current policy
        batch["action_log_prob"] = log_probs()
        ppo_update(loss, opt, batch, cfg, generator=gen)
    change = log_probs() - before
    assert change[positive].mean() > 0.1
    assert change[~positive].mean() < -0.1


def test_one_trunk_forward_feeds_both_losses():
    policy, ac, batch, loss, opt, cfg, gen = _setup(n=16)
    calls = []
    handle = policy.register_forward_hook(lambda *_: calls.append(1))
    out = loss(batch)
    handle.remove()
    assert len(calls) == 1
    out["loss_critic"].backward(retain_graph=True)
    value_grad = sum(p.grad.abs().sum() for p in policy.value_head.parameters())
    assert value_grad > 0 and policy.policy_head.weight.grad is None
    out["loss_objective"].backward()
    assert policy.policy_head.weight.grad.abs().sum() > 0


def test_ppo_update_has_no_host_sync():
    policy, ac, batch, loss, opt, cfg, gen = _setup()
    before = [p.detach().clone() for p in policy.parameters()]
    # Exempt: non-capturable Adam keeps its step counter in a CPU tensor even for CUDA
    # parameters and reads it with .item() (a host read, not a device sync). On CUDA,
    # Adam(fused=True) or capturable=True keeps the counter on the device instead.
    step = opt.step
    opt.step = lambda: allow_host_reads(step)
    with forbid_host_sync():
        stats = ppo_update(loss, opt, batch, cfg, generator=gen, lr=1e-3)
    assert torch.isfinite(stats["loss_objective"]).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))


def test_rollout_forward_has_no_host_sync():
    policy, ac, batch, loss, opt, cfg, gen = _setup(n=8)
    obs = batch.select("observation", "action_mask")
    with forbid_host_sync(), torch.no_grad():
        out = ac.policy_value(obs)
    assert out["action"].shape == (8,) and out["state_value"].shape == (8, 1)


def test_all_masked_rows_give_finite_losses():
    policy, ac, batch, loss, opt, cfg, gen = _setup(n=16)
    batch["action_mask"][:4] = False  # no allowed action: the distribution falls back to unmasked
    with torch.no_grad():
        batch = ac.policy_value(batch)
    out = loss(batch)
    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)


def test_lr_annealing():
    assert lr_at(0, 10, 1e-3) == 1e-3
    assert math.isclose(lr_at(9, 10, 1e-3), 1e-4)
    with pytest.raises(ValueError, match="iteration=10"):
        lr_at(10, 10, 1e-3)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    set_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] == 0.25


def test_ppo_update_validates_batch():
    policy, ac, batch, loss, opt, cfg, gen = _setup(n=16)
    with pytest.raises(ValueError, match="num_minibatches=3"):
        ppo_update(loss, opt, batch, replace(cfg, num_minibatches=3), generator=gen)
    flat = batch.clone()
    flat["advantage"] = flat["advantage"].squeeze(-1)
    with pytest.raises(ValueError, match="unsqueeze"):
        ppo_update(loss, opt, flat, cfg, generator=gen)
    with pytest.raises(KeyError, match="value_target"):
        ppo_update(loss, opt, batch.exclude("value_target"), cfg, generator=gen)


@pytest.mark.parametrize(
    "kwargs, site",
    [(dict(entropy_bonus=True, clip_value=None), "_get_entropy"),
     (dict(entropy_bonus=False, clip_value=0.2), "loss_critic")],
)
def test_stock_clip_ppo_loss_syncs_where_documented(kwargs, site):
    """Why CleanRLClipPPOLoss exists: TorchRL 0.14.1's ClipPPOLoss syncs at these two sites.
    (If this starts failing after a TorchRL upgrade, the overrides may no longer be needed.)"""
    from torchrl.objectives import ClipPPOLoss

    policy, ac, batch, loss, opt, cfg, gen = _setup(n=8)
    stock = ClipPPOLoss(ac.actor, ac.critic, functional=False, loss_critic_type="l2", **kwargs)
    with forbid_host_sync(), pytest.raises(HostSyncError) as info:
        stock(batch)
    assert site in [entry.name for entry in info.traceback]


def test_grad_hook_runs_between_backward_and_clipping():
    policy, ac, batch, loss, opt, cfg, gen = _setup(n=16)
    calls = []

    def zero_grads():  # stands in for a cross-rank all-reduce that rewrites .grad
        calls.append(1)
        for p in policy.parameters():
            p.grad = torch.zeros_like(p)

    before = [p.detach().clone() for p in policy.parameters()]
    stats = ppo_update(loss, opt, batch, cfg, generator=gen, grad_hook=zero_grads)
    assert len(calls) == cfg.update_epochs * cfg.num_minibatches
    assert torch.count_nonzero(stats["grad_norm"]) == 0
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters()))
