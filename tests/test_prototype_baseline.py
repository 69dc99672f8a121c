"""The benchmark's prototype-style baseline runs the same episodes as the batched env.

Same images, same clicks: the one-episode-at-a-time NumPy/SciPy env (``references.prototype_baseline``)
and ``ClickEnv`` (all episodes in one batch) must agree on the initial click, Dice, the boundary
score, rewards, done flags and observations at every step; otherwise the benchmark's speedup
would compare two different computations.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from references.prototype_baseline import (EpisodeData, PrototypeClickEnv, SAM2Predictor,
                                      WeightFreePredictor, boundary_fscore, dice, ritm_next_click,
                                      run_episodes)
from gpu_env.obs_spec import OBS
from gpu_env.config import PROTOTYPE_ENV
from gpu_env.datasets import load_dataset
from gpu_env.env import ClickEnv
from gpu_env.metrics import boundary_fscore as device_fscore
from gpu_env.metrics import dice as device_dice
from gpu_env.oracle import first_click
from sam_batch.decoder import BatchedSAM2Decoder
from sam_batch.geodesic import GeodesicSegmenter
from references.sam_fixtures import random_features, tiny_model

N_IMAGES = 4
CONFIG = replace(PROTOTYPE_ENV, max_clicks=5)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", split="val", size=256, count=N_IMAGES)


def actions_for(env: ClickEnv, gt: torch.Tensor, seed: int) -> torch.Tensor:
    """``[max_clicks, B]`` actions: half drawn inside the GT (fg clicks on object cells), half
    uniformly (any label, anywhere), so both labels and both kinds of cells occur."""
    G = env.config.grid_size
    g = torch.Generator().manual_seed(seed)
    steps, batch = env.config.max_clicks, gt.shape[0]
    cells_in = torch.nn.functional.adaptive_max_pool2d(gt[:, None].float(), G).flatten(1) > 0
    pick = torch.multinomial(cells_in.float() + 1e-3, steps, replacement=True, generator=g).T
    uniform = torch.randint(0, env.num_actions, (steps, batch), generator=g)
    return torch.where(torch.arange(steps)[:, None] % 2 == 0, pick, uniform)


def batched_records(env: ClickEnv, actions: torch.Tensor, seed: int = 0) -> list[dict]:
    """Image ``i`` in row ``i``, all rows stepped together; one record per step (0 = reset)."""
    n = env.num_images
    state = env.initial_state(n, seed)
    state = env.reset(state, torch.ones(n, dtype=torch.bool), torch.arange(n))
    records = [{"dice": state["dice"], "boundary": state["boundary"], "point": state["points"][:, 0],
                "obs": env.observe(state)[OBS]}]
    for a in actions:
        state, out = env.step(state, a)
        records.append({**{k: out[k] for k in ("dice", "boundary", "reward", "terminated", "truncated")},
                        "obs": env.observe(state)[OBS]})
    return records


def baseline_records(base: PrototypeClickEnv, image: int, actions: list[int]) -> list[dict]:
    """One episode of the baseline on ``image``; records as ``batched_records`` (one row)."""
    obs, info = base.reset(image_index=image)
    records = [{"dice": info["dice"], "boundary": info["boundary"], "point": base.points[0], "obs": obs}]
    for a in actions:
        obs, reward, terminated, truncated, info = base.step(a)
        records.append({"dice": info["dice"], "boundary": info["boundary"], "reward": reward,
                        "terminated": terminated, "truncated": truncated, "obs": obs})
    return records


def compare(env: ClickEnv, base: PrototypeClickEnv, seed: int = 0) -> dict[str, float]:
    """Largest differences between the two envs over every image's episode."""
    actions = actions_for(env, env.gt, seed)
    batched = batched_records(env, actions, seed)
    worst = {"dice": 0.0, "boundary": 0.0, "reward": 0.0, "point": 0.0, "obs_planes": 0.0,
             "obs_mask_disagreement": 0.0}
    for i in range(env.num_images):
        for b, r in zip(batched, baseline_records(base, i, actions[:, i].tolist())):
            for key in ("dice", "boundary", "reward"):
                if key in r:
                    worst[key] = max(worst[key], abs(r[key] - float(b[key][i])))
            if "point" in r:
                worst["point"] = max(worst["point"], float(np.abs(np.array(r["point"]) - b["point"][i].numpy()).max()))
            if "terminated" in r:
                assert (r["terminated"], r["truncated"]) == (bool(b["terminated"][i]), bool(b["truncated"][i]))
            obs = b["obs"][i].numpy()
            planes = [0, 1, 2, 4, 5]  # RGB and heatmaps; channel 3 is the binary mask
            worst["obs_planes"] = max(worst["obs_planes"], float(np.abs(r["obs"][planes] - obs[planes]).max()))
            worst["obs_mask_disagreement"] = max(worst["obs_mask_disagreement"],
                                                 float((r["obs"][3] != obs[3]).mean()))
    return worst


def test_weightfree_baseline_matches_batched_env(data):
    seg = GeodesicSegmenter(data.images)
    env = ClickEnv(seg, data, CONFIG)
    base = PrototypeClickEnv(WeightFreePredictor(seg), EpisodeData.from_dataset(data, 256, 128), CONFIG)
    worst = compare(env, base)
    # Same torch decode on the same inputs; SciPy vs Kornia metrics on the same booleans; the
    # observation differs only by float rounding of the heatmap Gaussians.
    assert worst["point"] == 0.0, worst
    assert worst["dice"] <= 1e-6 and worst["boundary"] <= 1e-6 and worst["reward"] <= 1e-6, worst
    assert worst["obs_planes"] <= 1e-5 and worst["obs_mask_disagreement"] == 0.0, worst


def test_sam2_baseline_matches_batched_env(data):
    model = tiny_model()  # hiera_t at 256: 64x64 masks, 2x2-pixel grid cells
    feats = random_features(model, N_IMAGES, seed=1)
    env = ClickEnv(BatchedSAM2Decoder(model, feats), data, CONFIG)
    predictor = SAM2Predictor(model, feats)
    base = PrototypeClickEnv(predictor, EpisodeData.from_dataset(data, predictor.mask_size, 128), CONFIG)
    worst = compare(env, base)
    # Masked-attention batching vs SAM2's own per-episode decode: float rounding only, which
    # can flip the odd pixel whose logit is ~0.
    assert worst["point"] == 0.0, worst
    assert worst["dice"] <= 2e-3 and worst["boundary"] <= 1e-2 and worst["reward"] <= 1e-2, worst
    assert worst["obs_planes"] <= 1e-5 and worst["obs_mask_disagreement"] <= 1e-3, worst


def test_host_oracle_and_metrics_match_device(data):
    gt = data.masks
    click = first_click(gt)
    empty = np.zeros(gt.shape[1:], dtype=bool)
    for i in range(gt.shape[0]):
        g = gt[i].numpy()
        row, col, positive = ritm_next_click(empty, g, np.ones_like(g))
        assert (row, col, positive) == (int(click.rows[i]), int(click.cols[i]), bool(click.positive[i]))
    pred = torch.roll(gt, shifts=(5, -3), dims=(1, 2))
    d, f = device_dice(pred, gt), device_fscore(pred, gt, 2)
    for i in range(gt.shape[0]):
        assert dice(pred[i].numpy(), gt[i].numpy()) == pytest.approx(float(d[i]), abs=1e-6)
        assert boundary_fscore(pred[i].numpy(), gt[i].numpy(), 2) == pytest.approx(float(f[i]), abs=1e-6)


def test_run_episodes_counts_agent_steps(data):
    seg = GeodesicSegmenter(data.images)
    base = PrototypeClickEnv(WeightFreePredictor(seg), EpisodeData.from_dataset(data, 256, 128),
                             replace(PROTOTYPE_ENV, max_clicks=3))
    assert run_episodes(base, 2, seed=0) == 6
