"""The ``prior_click`` observation (RITM's click signal on the mask prior, per action cell) and
the residual actor built on it: parity with a SciPy reference, agreement with RITM's click,
no ground truth in it, and the actor's bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from gpu_env.obs_spec import PRIOR_CLICK
from gpu_env.oracle import ritm_click
from gpu_env.torchrl_env import SAM2ClickTorchRLEnv
from gpu_env.prior_click import PRIOR_CLICK_RESOLUTION_PER_CELL, prior_click_distance
from ppo.train import Trainer
from tests.test_train import tiny
from tests.nets import spatial


def _blobs(B: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random unions of discs: [B, size, size] float in {0, 1}."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(B, size, size)
    for b in range(B):
        for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
            cy, cx = torch.randint(size, (2,), generator=gen).tolist()
            r = int(torch.randint(2, size // 3, (1,), generator=gen))
            out[b] += ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float()
    return (out > 0).float()


def _reference(prior: np.ndarray, mask: np.ndarray, G: int) -> np.ndarray:
    """SciPy: area-resample to R = 2G, threshold, padded EDT per error map, max per cell."""
    R = PRIOR_CLICK_RESOLUTION_PER_CELL * G
    def area(x):  # block mean to R x R
        k = x.shape[-1] // R
        return x.reshape(R, k, R, k).mean(axis=(1, 3))
    out = np.zeros((prior.shape[0], 2, G, G), np.float32)
    for b in range(prior.shape[0]):
        p, m = area(prior[b]) > 0.5, area(mask[b].astype(np.float64)) > 0.5
        for c, err in enumerate((p & ~m, m & ~p)):
            d = ndimage.distance_transform_edt(np.pad(err, 1))[1:-1, 1:-1] / PRIOR_CLICK_RESOLUTION_PER_CELL
            k = PRIOR_CLICK_RESOLUTION_PER_CELL
            out[b, c] = d.reshape(G, k, G, k).max(axis=(1, 3))
    return out


def test_prior_click_matches_a_scipy_reference():
    gen = torch.Generator().manual_seed(0)
    G, S, M = 8, 32, 64
    prior = F.avg_pool2d(_blobs(12, M, gen)[:, None], M // S)  # soft edges in [0, 1]
    mask = _blobs(12, M, gen).bool()
    got = prior_click_distance(prior, mask, G)
    want = _reference(prior[:, 0].double().numpy(), mask.numpy(), G)
    assert got.shape == (12, 2, G, G) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    assert float(got.max()) > 1  # the cases hold real errors


def test_the_largest_cell_holds_ritms_click_on_the_prior():
    """At the working resolution, RITM's click with the prior as target (the learned clicker's
    rule) lies in a cell of maximal ``prior_click``, with its label's channel."""
    gen = torch.Generator().manual_seed(1)
    G = 16
    R = PRIOR_CLICK_RESOLUTION_PER_CELL * G
    prior, mask = _blobs(16, R, gen)[:, None], _blobs(16, R, gen).bool()
    dist = prior_click_distance(prior, mask, G)
    click = ritm_click(mask, prior[:, 0] > 0.5)
    k = PRIOR_CLICK_RESOLUTION_PER_CELL
    label = (~click.positive).long()  # channel 0: a foreground click
    at_click = dist[torch.arange(16), label, click.rows // k, click.cols // k]
    has = click.has_error
    assert bool(has.all())
    torch.testing.assert_close(at_click, dist.flatten(1).amax(1), rtol=0, atol=0)


def test_prior_click_is_zero_where_prior_and_mask_agree():
    prior = torch.zeros(2, 1, 16, 16)
    prior[:, :, 4:12, 4:12] = 1.0
    mask = F.interpolate(prior, size=32, mode="nearest")[:, 0].bool()
    assert torch.equal(prior_click_distance(prior, mask, 8), torch.zeros(2, 2, 8, 8))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    cfg = tiny(tmp_path_factory.mktemp("prior_click"), "pc", width=8, train_images=12,
               num_envs=8, prior_steps=3, obs_prior_click=True, prior_click_scale=2.0)
    t = Trainer(cfg)
    t.pretrain_prior()
    return t


def test_env_observes_prior_click_from_the_prior_and_mask_only(trainer):
    env = trainer.env
    state = env.initial_state(8, 3)
    state, _, _ = env.step_autoreset(state, torch.arange(8) * 29 % env.num_actions)
    obs = env.observe(state)
    want = prior_click_distance(env.mask_prior[state["image_id"]], state["mask"], env.config.grid_size)
    assert torch.equal(obs[PRIOR_CLICK], want)
    other = env.with_config(env.config)
    other.gt = ~env.gt  # the GT plays no part
    assert torch.equal(other.observe(state)[PRIOR_CLICK], obs[PRIOR_CLICK])
    assert PRIOR_CLICK in trainer.policy.in_keys
    spec = SAM2ClickTorchRLEnv(env, batch_size=8).observation_spec[PRIOR_CLICK]
    assert spec.shape == obs[PRIOR_CLICK].shape and spec.is_in(obs[PRIOR_CLICK])


def test_residual_actor_adds_beta_times_prior_click_to_the_trunk_logits(trainer):
    policy = trainer.policy
    obs = trainer.env.observe(trainer.env.initial_state(8, 5))
    inputs = {k: obs[k] for k in policy.in_keys}
    with torch.no_grad():
        logits, value = policy(**inputs)
        beta = policy.prior_click_scale.clone()
        policy.prior_click_scale.zero_()
        trunk, value0 = policy(**inputs)
        policy.prior_click_scale.copy_(beta)
    assert float(beta) == 2.0
    torch.testing.assert_close(logits - trunk, 2.0 * obs[PRIOR_CLICK].flatten(1))
    assert torch.equal(value, value0)
    assert policy.prior_click_scale.requires_grad  # learned by PPO
    assert any(p is policy.prior_click_scale for p in trainer.trainable())


def test_without_a_scale_the_map_is_a_trunk_input_only():
    net = spatial(grid_size=8, obs_size=32, width=4, use_mask_prior=True, prior_width=4,
                        use_prior_click=True, prior_click_scale=0.0)
    assert net.prior_click_scale is None and PRIOR_CLICK in net.in_keys
    with pytest.raises(ValueError, match="prior_click"):
        net(observation=torch.rand(2, 6, 32, 32), mask_prior=torch.rand(2, 1, 32, 32))


def test_prior_click_follows_the_mask_prior():
    """``--no-mask-prior`` (the simulated-user recipe) turns the prior's click map off too."""
    from gpu_env.config import EnvConfig

    assert PRIOR_CLICK in EnvConfig(obs_prior_click=True).observation_keys
    assert PRIOR_CLICK not in EnvConfig(obs_prior_click=True, obs_mask_prior=False).observation_keys
    assert PRIOR_CLICK not in EnvConfig(obs_prior_click=False).observation_keys
