"""The env as a library: gpu_env.make, the Gymnasium envs of the project's task, SB3, TorchRL."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from gpu_env.gym_env import ClickGymEnv, ClickGymVectorEnv, to_numpy
from gpu_env.make import make
from gpu_env.obs_spec import OBSERVATION, env_fields

SMALL = dict(images=8, image_size=64, obs_size=64, grid_size=8, max_clicks=3, progress=False)


@pytest.fixture(scope="module")
def env():
    return make(**SMALL)


def test_make_defaults_are_the_training_runs_task():
    from ppo.config import TrainConfig

    cfg = TrainConfig()
    built = make(images=4, progress=False)
    assert built.config == cfg.env
    assert built.num_images == 4 and built.mask_prior is not None
    assert built.config.observation_keys == ("observation", "sam_prob", "mask_prior", "prior_click",
                                             "action_mask")


def test_unknown_and_inconsistent_settings_are_refused():
    with pytest.raises(TypeError, match="action_msk"):
        make(action_msk=True, **SMALL)
    with pytest.raises(ValueError, match="mask_prior=None"):
        make(mask_prior=None, obs_mask_prior=True, **SMALL)
    with pytest.raises(TypeError, match="env=<ClickEnv>"):
        ClickGymEnv(env=make(mask_prior=None, **SMALL), max_clicks=4)


def test_mask_prior_none_leaves_the_prior_keys_out():
    e = make(mask_prior=None, **SMALL)
    assert "mask_prior" not in e.config.observation_keys and "prior_click" not in e.config.observation_keys


@pytest.mark.parametrize("settings", [{}, {"mask_prior": None}, {"obs_sam_prob": False, "action_mask": False},
                                      {"mode": "simulated_user"}])
def test_check_env_passes_in_every_observation_configuration(settings):
    g = ClickGymEnv(**{**SMALL, **settings})
    check_env(g, skip_render_check=True)
    obs, _ = g.reset(seed=0)
    assert set(obs) == set(g.env.config.observation_keys)
    assert obs["observation"].dtype == np.uint8 and g.observation_space["observation"].shape == (6, 64, 64)


def test_observation_spec_describes_what_observe_returns(env):
    fields = env_fields(env)
    obs = env.observe(env.initial_state(3, 0))
    assert list(obs.keys()) == [f.name for f in fields]
    for f in fields:
        assert tuple(obs[f.name].shape) == (3, *f.shape) and obs[f.name].dtype == f.dtype, f.name
    assert {e.name for e in OBSERVATION} >= set(env.config.observation_keys)


def test_action_masks_follow_the_clicks(env):
    g = ClickGymEnv(env=env)
    g.reset(seed=1)
    mask = g.action_masks()
    assert mask.shape == (env.num_actions,) and mask.dtype == np.bool_ and (~mask).sum() == 2
    a = int(np.flatnonzero(mask)[0])
    obs, *_ = g.step(a)
    assert not g.action_masks()[a] and np.array_equal(obs["action_mask"].astype(bool), g.action_masks())


def test_image_index_is_type_checked(env):
    g = ClickGymEnv(env=env)
    for bad in (1.7, "2", True):
        with pytest.raises(TypeError, match="image_index"):
            g.reset(seed=0, options={"image_index": bad})
    with pytest.raises(ValueError, match="out of range"):
        g.reset(options={"image_index": 99})
    with pytest.raises(ValueError, match="not supported"):
        g.reset(options={"imag_index": 1})
    _, info = g.reset(seed=3, options={"image_index": 5})
    assert info["image_index"] == 5


def test_vector_env_matches_click_env_step_for_step(env):
    B = 6
    venv = ClickGymVectorEnv(B, env=env)
    obs, _ = venv.reset(seed=4)
    state = env.initial_state(B, 4)
    fields = env_fields(env)
    gen = np.random.default_rng(0)
    finished = 0
    for _ in range(env.config.max_clicks + 3):
        for k, v in to_numpy(env.observe(state), fields).items():
            assert np.array_equal(obs[k], v), k
        a = gen.integers(0, env.num_actions, B)
        obs, reward, term, trunc, info = venv.step(a)
        state, out, final = env.step_autoreset(state, torch.from_numpy(a))
        assert np.array_equal(reward, out["reward"].numpy()) and np.array_equal(trunc, out["truncated"].numpy())
        done = out["done"].numpy()
        assert np.array_equal(info["_final_obs"], done)
        finished += done.sum()
        # every row of final_obs is the observation before the autoreset (finished rows are
        # observed again, the others are the new observation's rows)
        for k, v in to_numpy(final, fields).items():
            assert np.array_equal(info["final_obs"][k], v), k
    assert finished >= B  # every row went through an autoreset at least once


def test_vector_reset_takes_a_seed_list_and_honours_options_with_a_seed(env):
    B = 4
    venv = ClickGymVectorEnv(B, env=env)
    single = ClickGymEnv(env=env)
    obs, info = venv.reset(seed=[10, 11, 12, 13])
    for i, s in enumerate([10, 11, 12, 13]):
        o, inf = single.reset(seed=s)
        assert inf["image_index"] == info["image_index"][i]
        assert np.array_equal(o["observation"], obs["observation"][i])
    venv.step(np.flatnonzero(venv.action_masks()[0])[:1].repeat(B))
    before = venv._state.clone()
    mask = np.array([True, False, True, False])
    obs, info = venv.reset(seed=7, options={"reset_mask": mask})
    assert (info["num_clicks"][mask] == 1).all() and (info["num_clicks"][~mask] == 2).all()
    for k in ("points", "labels", "key", "mask"):
        assert torch.equal(venv._state[k][~torch.from_numpy(mask)], before[k][~torch.from_numpy(mask)])
    _, info = venv.reset(seed=1, options={"image_index": [0, 1, 2, 3]})
    assert list(info["image_index"]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="one per env"):
        venv.reset(seed=[1, 2])


def test_gymnasium_make_registers_the_projects_task():
    import gpu_env.gym_registration  # noqa: F401

    g = gymnasium.make("SAM2Click-v0", **SMALL)
    obs, _ = g.reset(seed=0)
    assert "mask_prior" in obs and "action_mask" in obs
    v = gymnasium.make_vec("SAM2Click-v0", num_envs=3, vectorization_mode="vector_entry_point", **SMALL)
    obs, _ = v.reset(seed=[0, 1, 2])
    assert obs["observation"].shape == (3, 6, 64, 64)


def test_sb3_ppo_and_maskable_ppo_train_on_single_and_batched_envs(env):
    sb3 = pytest.importorskip("stable_baselines3")
    contrib = pytest.importorskip("sb3_contrib")
    from gpu_env.sb3_vec_env import ClickSB3VecEnv

    seen = []

    class Spy(ClickSB3VecEnv):
        def action_masks(self):
            m = super().action_masks()
            seen.append(m.copy())
            return m

    sb3.PPO("MultiInputPolicy", ClickGymEnv(env=env), n_steps=32, batch_size=32, n_epochs=1,
            seed=0, device="cpu").learn(64)
    sb3.PPO("MultiInputPolicy", ClickSB3VecEnv(vector_env=ClickGymVectorEnv(8, env=env)), n_steps=8,
            batch_size=32, n_epochs=1, seed=0, device="cpu").learn(128)
    contrib.MaskablePPO("MultiInputPolicy", ClickGymEnv(env=env), n_steps=32, batch_size=32,
                        n_epochs=1, seed=0, device="cpu").learn(64)
    venv = Spy(vector_env=ClickGymVectorEnv(8, env=env))
    model = contrib.MaskablePPO("MultiInputPolicy", venv, n_steps=8, batch_size=32, n_epochs=1,
                                seed=0, device="cpu")
    model.learn(128)
    assert len(seen) >= 16 and all(m.shape == (8, env.num_actions) for m in seen)
    # the learner saw the masks: its sampled actions never hit a masked cell
    obs = venv.reset()
    masks = venv.action_masks()
    for _ in range(20):
        a, _ = model.predict(obs, action_masks=masks)
        assert masks[np.arange(8), a].all()
        obs, *_ = venv.step(a)
        masks = venv.action_masks()


def test_torchrl_env_passes_check_env_specs():
    from torchrl.envs import StepCounter, TransformedEnv, RewardSum
    from torchrl.envs.utils import check_env_specs

    from gpu_env.make import make_torchrl

    tenv = make_torchrl(num_envs=4, **SMALL)
    check_env_specs(tenv)
    t = TransformedEnv(tenv, StepCounter())
    t.append_transform(RewardSum())
    roll = t.rollout(5, break_when_any_done=False)
    assert roll.batch_size == torch.Size([4, 5]) and "episode_reward" in roll["next"].keys()


def test_prototype_envs_check_image_index_and_honour_reset_mask_with_a_seed():
    from gpu_env.compat import SAM2ClickEnv
    from gpu_env.datasets import load_dataset
    from gpu_env.vector_env import SAM2ClickVectorEnv

    data = load_dataset("synthetic", split="train", size=64, count=6)
    single = SAM2ClickEnv(dataset=data, use_sam=False, obs_size=64, grid_size=8, max_clicks=3)
    for bad in (1.7, "2"):
        with pytest.raises(TypeError, match="image_index"):
            single.reset(seed=0, options={"image_index": bad})
    venv = SAM2ClickVectorEnv(4, dataset=data, use_sam=False, obs_size=64, grid_size=8, max_clicks=3)
    venv.reset(seed=0)
    venv.step(np.array([0, 1, 2, 3]))
    mask = np.array([True, False, False, True])
    _, info = venv.reset(seed=5, options={"reset_mask": mask})
    assert list(info["num_clicks"]) == [1, 2, 2, 1]
    _, info = venv.reset(seed=5, options={"image_index": 4})
    assert (info["image_index"] == 4).all()
    with pytest.raises(ValueError, match="not supported"):
        venv.reset(options={"reset_mask_": mask})
