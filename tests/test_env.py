"""The batched click env: seeding, partial resets, no host syncs, rewards, observations, specs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tensordict import TensorDict

from gpu_env import observation as O
from gpu_env.obs_spec import ACTION_MASK, GT_ERROR, OBS, SAM_PROB
from gpu_env.config import PROTOTYPE_ENV, EnvConfig
from gpu_env.datasets import load_dataset
from gpu_env.datasets.io import resize_images
from gpu_env.env import ClickEnv
from gpu_env.metrics import dice as dice_score
from gpu_env.oracle import first_click
from gpu_env.torchrl_env import SAM2ClickTorchRLEnv
from sam_batch.geodesic import GeodesicSegmenter
from tests.sync_guard import forbid_host_sync

B = 6


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", split="train", size=256, count=10)


@pytest.fixture(scope="module")
def env(data):
    return ClickEnv(GeodesicSegmenter(data.images), data, replace(PROTOTYPE_ENV, max_clicks=3))


def random_actions(env: ClickEnv, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, env.num_actions, (n, B), generator=g)


def rollout(env: ClickEnv, seed: int, actions: torch.Tensor) -> list[TensorDict]:
    state = env.initial_state(B, seed)
    out = [state]
    for a in actions:
        state, _, _ = env.step_autoreset(state, a)
        out.append(state)
    return out


def assert_td_equal(a: TensorDict, b: TensorDict) -> None:
    assert set(a.keys()) == set(b.keys())
    for k in a.keys():
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_rollout_and_global_rng_untouched(env):
    actions = random_actions(env, 8, 0)
    before = torch.random.get_rng_state()
    r1 = rollout(env, 3, actions)
    r2 = rollout(env, 3, actions)
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(r1, r2):
        assert_td_equal(a, b)


def test_different_seed_different_images(env):
    a = env.initial_state(64, 0)["image_id"]
    b = env.initial_state(64, 1)["image_id"]
    assert not torch.equal(a, b)
    assert a.unique().numel() > 5  # draws cover the pool


def test_row_draws_do_not_depend_on_batch_size(env):
    small = env.initial_state(3, 7)
    big = env.initial_state(9, 7)
    assert torch.equal(small["image_id"], big["image_id"][:3])
    assert torch.equal(small["key"], big["key"][:3])


def test_partial_reset_leaves_other_rows_bitwise_unchanged(env):
    state = env.initial_state(B, 0)
    state, _ = env.step(state, random_actions(env, 1, 1)[0])
    rows = torch.tensor([True, False, True, False, False, True])
    new = env.reset(state, rows)
    for k in state.keys():
        assert torch.equal(new[k][~rows], state[k][~rows]), k
    assert (new["step"][rows] == 0).all() and (new["num_clicks"][rows] == 1).all()
    assert (new["episode"][rows] == state["episode"][rows] + 1).all()


def test_reset_places_oracle_first_click_and_its_decode(env, data):
    state = env.initial_state(B, 0)
    ids = state["image_id"]
    click = first_click(env.gt[ids])
    M = env.mask_size
    px = ((state["points"][:, 0] + 0.5) * M / env.input_size - 0.5).round().long()
    assert torch.equal(px[:, 0], click.cols) and torch.equal(px[:, 1], click.rows)
    assert (state["labels"][:, 0] == 1).all() and (state["labels"][:, 1:] == -1).all()
    assert env.gt[ids, click.rows, click.cols].all()  # the first click lies on the object
    direct = env.segmenter.decode(ids, state["points"][:, :1], state["labels"][:, :1],
                                  multimask=True)
    torch.testing.assert_close(state["logits"], direct.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(state["dice"], dice_score(direct.logits[:, 0] > 0, env.gt[ids]))


@pytest.mark.parametrize("row_chunk", [None, 4])  # 4 < B: the row-chunked path too
def test_no_host_sync_in_reset_step_observe(data, row_chunk):
    cfg = replace(PROTOTYPE_ENV, max_clicks=2, obs_sam_prob=True, action_mask=True, mode="simulated_user",
                    target_dice=0.95)
    env = ClickEnv(GeodesicSegmenter(data.images), data, cfg, row_chunk=row_chunk)
    state = env.initial_state(B, 0)
    actions = random_actions(env, 5, 2)
    with forbid_host_sync():
        for a in actions:
            obs = env.observe(state)
            state, out, final = env.step_autoreset(state, a)
        state = env.reset(state, out["done"])
    assert obs[OBS].shape == (B, 6, 128, 128)


def test_reward_telescopes_to_total_improvement(env):
    cfg = env.config
    state = env.initial_state(B, 0)
    d0, b0 = state["dice"].clone(), state["boundary"].clone()
    total = torch.zeros(B)
    for a in random_actions(env, cfg.max_clicks, 5):
        state, out = env.step(state, a)
        total += out["reward"]
    expected = (state["dice"] - d0) + cfg.boundary_weight * (state["boundary"] - b0)
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-5)
    assert out["truncated"].all() and not out["terminated"].any()


def test_step_semantics_action_coding_and_finished_rows(env):
    state = env.initial_state(B, 0)
    G = env.config.grid_size
    action = torch.tensor([0, G * G, 5 * G + 7, G * G + 31, 2 * G * G - 1, 100])
    nxt, out = env.step(state, action)
    assert torch.equal(nxt["labels"][:, 1], torch.tensor([1, 0, 1, 0, 0, 1]))
    cell = action % (G * G)
    centre = (torch.stack((cell % G, cell // G), -1).float() + 0.5) * (env.input_size / G) - 0.5
    torch.testing.assert_close(nxt["points"][:, 1], centre)
    assert nxt["clicked"][torch.arange(B), cell].all()
    # finished rows do not move
    for _ in range(env.config.max_clicks - 1):
        nxt, out = env.step(nxt, action)
    assert out["done"].all()
    again, out2 = env.step(nxt, action)
    assert_td_equal(again, nxt)
    assert (out2["reward"] == 0).all()


def test_final_observation_kept_for_bootstrapping(env):
    state = env.initial_state(B, 0)
    for a in random_actions(env, env.config.max_clicks, 9):
        before = state
        state, out, final = env.step_autoreset(state, a)
    assert out["done"].all()
    stepped, _ = env.step(before, a)
    assert torch.equal(final[OBS], env.observe(stepped)[OBS])
    assert (state["step"] == 0).all()  # rows were reset after the final observation


def test_incremental_heatmaps_match_reference(env):
    state = env.initial_state(B, 0)
    for a in random_actions(env, 3, 4):
        state, _ = env.step(state, a)
    ref = O.heatmaps_from_clicks(state["points"], state["labels"], env.input_size,
                                 env.config.obs_size, env.config.heatmap_sigma)
    torch.testing.assert_close(state["heat"], ref, rtol=0, atol=1e-6)


def test_observation_channels_and_optional_keys(data):
    cfg = replace(PROTOTYPE_ENV, obs_sam_prob=True, action_mask=True, mode="simulated_user")
    env = ClickEnv(GeodesicSegmenter(data.images), data, cfg)
    state = env.initial_state(B, 0)
    obs = env.observe(state)
    x = obs[OBS]
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    rgb = resize_images(data.images[state["image_id"]], 128).float() / 255
    torch.testing.assert_close(x[:, :3], rgb, atol=1e-6, rtol=0)
    assert torch.equal(x[:, 3].bool(), state["mask"][:, ::2, ::2])
    assert obs[SAM_PROB].shape == (B, 1, 128, 128)
    fn = obs[GT_ERROR][:, 0].bool()
    gt = env.gt[state["image_id"]][:, ::2, ::2]
    assert torch.equal(fn, gt & ~state["mask"][:, ::2, ::2])
    mask = obs[ACTION_MASK]
    G2 = env.config.grid_size ** 2
    assert mask.shape == (B, 2 * G2)
    first = env.first_cell[state["image_id"]]
    assert not mask[torch.arange(B), first].any() and not mask[torch.arange(B), G2 + first].any()
    # simulated user: fg allowed only where the cell holds a false negative
    cells_fn = torch.nn.functional.adaptive_max_pool2d(
        (env.gt[state["image_id"]] & ~state["mask"]).float()[:, None], 32).flatten(1).bool()
    has = (cells_fn & ~state["clicked"]).any(1)
    assert torch.equal(mask[has, :G2], (cells_fn & ~state["clicked"])[has])


def test_target_dice_terminates(data):
    env = ClickEnv(GeodesicSegmenter(data.images), data, replace(PROTOTYPE_ENV, target_dice=0.0))
    state = env.initial_state(B, 0)
    _, out = env.step(state, torch.zeros(B, dtype=torch.long))
    assert out["terminated"].all() and not out["truncated"].any()


@pytest.mark.parametrize(
    "action, err",
    [
        (torch.full((B,), 2048), ValueError),
        (torch.full((B,), -1), ValueError),
        (torch.zeros(B, 2, dtype=torch.long), ValueError),
        (torch.full((B,), float("nan")), TypeError),
        (torch.zeros(B, dtype=torch.float32), TypeError),
        ([0] * B, TypeError),
    ],
)
def test_bad_actions_raise_clear_errors(env, action, err):
    with pytest.raises(err, match="action"):
        env.validate_action(action, B)


def test_torchrl_env_specs_and_partial_reset(env):
    from torchrl.envs.utils import check_env_specs

    tenv = SAM2ClickTorchRLEnv(env, batch_size=4, seed=0)
    check_env_specs(tenv)
    td = tenv.reset()
    td["action"] = torch.tensor([1, 2, 3, 4])
    td = tenv.step(td)["next"]
    before = tenv.state.clone()
    reset = torch.tensor([[True], [False], [False], [True]])
    td2 = tenv.reset(TensorDict({"_reset": reset, "done": td["done"], "terminated": td["terminated"],
                                 "truncated": td["truncated"]}, batch_size=[4]))
    after = tenv.state
    keep = ~reset[:, 0]
    for k in before.keys():
        assert torch.equal(after[k][keep], before[k][keep]), k
    assert (after["step"][reset[:, 0]] == 0).all()
    assert td2["observation"].shape == (4, 6, 128, 128)


def test_torchrl_set_seed_is_reproducible(env):
    a = SAM2ClickTorchRLEnv(env, batch_size=4)
    b = SAM2ClickTorchRLEnv(env, batch_size=4)
    a.set_seed(11)
    b.set_seed(11)
    assert torch.equal(a.reset()["observation"], b.reset()["observation"])
    b.set_seed(12)
    assert not torch.equal(a.state["key"], b.state["key"])
    ro = a.rollout(3, break_when_any_done=False)
    assert ro["next", "reward"].shape == (4, 3, 1)


def test_with_config_shares_constants(env):
    longer = env.with_config(replace(env.config, max_clicks=19))
    assert longer.init_logits is env.init_logits and longer.config.max_points == 20
    with pytest.raises(ValueError, match="grid_size"):
        env.with_config(replace(env.config, grid_size=16))
