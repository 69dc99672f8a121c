"""The prototype-compatible single-episode API is a thin adapter over the batched env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpu_env.compat import SAM2ClickEnv, compute_dice
from gpu_env.obs_spec import OBS
from gpu_env.datasets import load_dataset
from references.sam_fixtures import tiny_model


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", split="val", size=256, count=4)


def test_weightfree_episode_round_trip_matches_batched_env(data):
    env = SAM2ClickEnv(dataset=data, use_sam=False, max_clicks=3)
    obs, info = env.reset(seed=5)
    assert obs.shape == (6, 128, 128) and obs.dtype == np.float32
    assert 0.0 <= info["dice"] <= 1.0 and info["num_clicks"] == 1
    batched = env.env.initial_state(1, 5)  # the same row-0 key: the same episode
    assert np.array_equal(obs, env.env.observe(batched)[OBS][0].numpy())
    actions = [17, 1024 + 300, 555]
    for k, a in enumerate(actions):
        obs, reward, done, truncated, info = env.step(a)
        batched, out = env.env.step(batched, torch.tensor([a]))
        assert isinstance(reward, float) and isinstance(done, bool) and isinstance(truncated, bool)
        assert reward == float(out["reward"][0]) and info["dice"] == float(out["dice"][0])
        assert np.array_equal(obs, env.env.observe(batched)[OBS][0].numpy())
        assert truncated == (k == len(actions) - 1) and not done
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    obs, info = env.reset(options={"image_index": 2})
    assert info["image_id"] == data.ids[2]


@pytest.mark.parametrize("bad, err", [(2048, ValueError), (-3, ValueError), (1.5, TypeError),
                                      (float("nan"), TypeError), (np.array([1, 2]), ValueError),
                                      (True, TypeError)])
def test_bad_actions(data, bad, err):
    env = SAM2ClickEnv(dataset=data, use_sam=False)
    env.reset(seed=0)
    with pytest.raises(err, match="action"):
        env.step(bad)


def test_numpy_and_tensor_scalar_actions_accepted(data):
    env = SAM2ClickEnv(dataset=data, use_sam=False)
    env.reset(seed=0)
    env.step(np.int64(3))
    env.step(torch.tensor([4]))


class PredictorLike:
    """What SAM2ImagePredictor offers the adapter: a ``.model`` attribute."""

    def __init__(self, model):
        self.model = model


def test_sam2_model_and_predictor_like_objects_plug_in(data):
    model = tiny_model()
    pairs = [data.load_original(i) for i in range(2)]
    for predictor in (model, PredictorLike(model)):
        env = SAM2ClickEnv(dataset=pairs, sam_predictor=predictor, max_clicks=2)
        obs, info = env.reset(seed=0)
        assert obs.shape == (6, 128, 128)
        obs, reward, done, truncated, info = env.step(5)
        assert np.isfinite(reward) and 0.0 <= info["dice"] <= 1.0
    with pytest.raises(TypeError, match="SAM2"):
        SAM2ClickEnv(dataset=pairs, sam_predictor=object())
    with pytest.raises(ValueError, match="use_sam=False"):
        SAM2ClickEnv(dataset=pairs, sam_predictor=None)


def test_compute_dice():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert compute_dice(a, b) == 1.0
    a[0, :2] = True
    assert compute_dice(a, b) == 0.0
    b[0, 1:3] = True
    assert compute_dice(a, b) == pytest.approx(0.5)
    assert compute_dice(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        compute_dice(a, b[:2])
