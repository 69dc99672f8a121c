"""The click env as a real Gymnasium env (check_env, registration, seeds, actions) and a
batched Gymnasium vector env that matches ``ClickEnv`` step for step; the TorchRL wrapper's
batch-shape errors."""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import replace

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from gpu_env.compat import SAM2ClickEnv
from gpu_env.obs_spec import OBS
from gpu_env.config import PROTOTYPE_ENV
from gpu_env.datasets import load_dataset
from gpu_env.env import ClickEnv
from gpu_env.gym_registration import PROTOTYPE_ID as ENV_ID, register_envs
from gpu_env.vector_env import SAM2ClickVectorEnv

SMALL = dict(use_sam=False, obs_size=32, grid_size=8, max_clicks=3)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", split="val", size=64, count=4)


def test_single_env_passes_gymnasium_check_env(data):
    register_envs()
    env = gymnasium.make(ENV_ID, dataset=data, render_mode="rgb_array", **SMALL)
    assert isinstance(env.unwrapped, gymnasium.Env) and isinstance(env.unwrapped, SAM2ClickEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env reports problems as warnings
        check_env(env.unwrapped)
    obs, _ = env.reset(seed=3)
    assert env.unwrapped.np_random_seed == 3 and obs in env.observation_space
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (32, 32, 3)
    env.close()


def test_make_with_module_prefix_registers(data):
    env = gymnasium.make(f"gpu_env.gym_registration:{ENV_ID}", dataset=data, **SMALL)
    assert env.action_space == gymnasium.spaces.Discrete(2 * 8 * 8)


def test_importing_the_library_does_not_register():
    code = ("import gymnasium, gpu_env.compat, gpu_env.vector_env, gpu_env.env;"
            f"assert {ENV_ID!r} not in gymnasium.registry, 'registered at import'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("seed", [2**70, 2**63, -1])
def test_out_of_range_seeds_refused(data, seed):
    env = SAM2ClickEnv(dataset=data, **SMALL)
    with pytest.raises(ValueError, match=rf"seed {seed} is out of range"):
        env.reset(seed=seed)
    venv = SAM2ClickVectorEnv(num_envs=2, dataset=data, **SMALL)
    with pytest.raises(ValueError, match=rf"seed {seed} is out of range"):
        venv.reset(seed=seed)


def test_huge_action_is_a_clear_error(data):
    env = SAM2ClickEnv(dataset=data, **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 100000000000000000000 is out of range.*< 128"):
        env.step(10**20)


def test_unseeded_first_reset_is_random_then_continues(data):
    env = SAM2ClickEnv(dataset=data, **SMALL)
    env.reset()
    assert env._seed is not None and 0 <= env._seed < 2**63


def test_vector_env_matches_click_env_step_for_step(data):
    B, seed = 6, 11
    register_envs()
    venv = gymnasium.make_vec(ENV_ID, num_envs=B, vectorization_mode="vector_entry_point",
                              dataset=data, **SMALL)
    assert isinstance(venv.unwrapped, SAM2ClickVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    ref = venv.unwrapped.env  # the same ClickEnv, driven directly
    obs, info = venv.reset(seed=seed)
    state = ref.initial_state(B, seed)
    assert np.array_equal(obs, ref.observe(state)[OBS].numpy())
    assert obs.shape == (B, 6, 32, 32) and obs in venv.observation_space
    venv.action_space.seed(0)
    finished = 0
    for _ in range(8):  # max_clicks=3: every row autoresets at least twice
        actions = venv.action_space.sample()
        obs, reward, terminated, truncated, info = venv.step(actions)
        state, out, final_obs = ref.step_autoreset(state, torch.from_numpy(actions))
        assert np.array_equal(obs, ref.observe(state)[OBS].numpy())
        assert np.array_equal(reward, out["reward"].numpy())
        assert np.array_equal(terminated, out["terminated"].numpy())
        assert np.array_equal(truncated, out["truncated"].numpy())
        done = out["done"].numpy()
        assert np.array_equal(info["_final_obs"], done)
        assert np.array_equal(info["final_obs"][done], final_obs[OBS].numpy()[done])
        assert np.array_equal(info["final_info"]["dice"][done], out["dice"].numpy()[done])
        assert np.array_equal(info["dice"], state["dice"].numpy())
        finished += int(done.sum())
    assert finished >= 2 * B
    frames = venv.unwrapped.render()
    assert frames is None
    venv.close()


def test_vector_env_partial_reset_and_bad_actions(data):
    venv = SAM2ClickVectorEnv(num_envs=3, dataset=data, render_mode="rgb_array", **SMALL)
    venv.reset(seed=0)
    venv.step(np.array([1, 2, 3]))
    obs, info = venv.reset(options={"reset_mask": np.array([True, False, False])})
    assert info["num_clicks"].tolist() == [1, 2, 2]
    assert len(venv.render()) == 3
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        venv.step(np.array([1, 2]))
    with pytest.raises(TypeError, match="integers"):
        venv.step([10**20, 0, 0])
    with pytest.raises(TypeError, match="integers"):
        venv.step(np.array([0.5, 1, 2]))
    with pytest.raises(ValueError, match=r"action 128 at row 2 is out of range"):
        venv.step(np.array([0, 1, 128]))


def test_torchrl_wrong_batch_shape_is_a_clear_error(data):
    from tensordict import TensorDict

    from gpu_env.torchrl_env import SAM2ClickTorchRLEnv
    from sam_batch.geodesic import GeodesicSegmenter

    env = ClickEnv(GeodesicSegmenter(data.images), data, replace(PROTOTYPE_ENV, obs_size=32, grid_size=8, max_clicks=3))
    for validate in (True, False):
        t = SAM2ClickTorchRLEnv(env, 4, validate_actions=validate)
        t.reset()
        with pytest.raises(ValueError, match=r"batch size \[3\], but this env runs 4 episodes"):
            t.step(TensorDict({"action": torch.zeros(3, dtype=torch.long)}, batch_size=[3]))
        with pytest.raises(ValueError, match=r"\"action\" must have shape \(4,\).*got \(4, 2\)"):
            t.step(TensorDict({"action": torch.zeros(4, 2, dtype=torch.long)}, batch_size=[4]))
    with pytest.raises(ValueError, match="seed .* out of range"):
        t.set_seed(2**70)
