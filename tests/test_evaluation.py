"""Evaluator: curves, NoC, baselines and the written results."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from gpu_env.config import PROTOTYPE_ENV
from gpu_env.datasets import load_dataset
from gpu_env.env import ClickEnv
from gpu_env.evaluation import Curves, evaluate_clicker, format_table, write_results
from gpu_env.evaluation.clickers import OracleClicker, RandomClicker, clicked_pixels
from sam_batch.geodesic import GeodesicSegmenter
from references.ritm_clicker import Clicker as RefClicker


@pytest.fixture(scope="module")
def setup():
    data = load_dataset("synthetic", split="test", size=256, count=4)
    env = ClickEnv(GeodesicSegmenter(data.images), data, PROTOTYPE_ENV)
    return env, data


def test_noc_definition():
    iou = np.array([[0.5, 0.86, 0.95], [0.91, 0.2, 0.3], [0.1, 0.2, 0.3]])
    c = Curves("x", iou, iou, iou, iou, iou)
    assert c.noc(0.85).tolist() == [2, 1, 3]  # first click reaching it; else max clicks
    assert c.noc(0.90).tolist() == [3, 1, 3]
    s = c.summary(table_clicks=2)
    assert s["noc85_mean"] == pytest.approx(2.0) and s["noc90_failures"] == 1


def test_no_click_baseline_is_flat_and_oracle_improves(setup):
    env, data = setup
    ids = torch.arange(len(data))
    flat = evaluate_clicker(env, data, None, ids, num_clicks=4, progress=False)
    assert np.allclose(flat.dice, flat.dice[:, :1])
    torch.testing.assert_close(torch.from_numpy(flat.dice[:, 0]), env.init_dice, rtol=0, atol=1e-6)
    orc = evaluate_clicker(env, data, OracleClicker(), ids, num_clicks=4, progress=False, record=2)
    assert orc.dice[:, 3].mean() > orc.dice[:, 0].mean() + 0.05
    assert len(orc.episodes) == 2 and len(orc.episodes[0]["masks"]) == 4
    assert np.isfinite(orc.dice_orig).all() and (orc.dice_orig <= 1).all()


def test_env_episode_with_oracle_reproduces_ritm_clicker(setup):
    """Initial click + oracle clicks through the batched env = RITM's clicker fed the env's
    masks (click positions, labels, and never an already-clicked pixel)."""
    env, data = setup
    B, M = 3, env.mask_size
    state = env.initial_state(B, 0)
    ref = [RefClicker(gt_mask=env.gt[i].numpy().astype(np.uint8)) for i in state["image_id"]]

    def last_click_pixels(state):
        nc = state["num_clicks"] - 1
        pts = state["points"][torch.arange(B), nc]
        px = ((pts + 0.5) * M / env.input_size - 0.5).round().long()
        return px, state["labels"][torch.arange(B), nc]

    masks = [np.zeros((M, M), bool)] * B  # the initial user click sees an empty prediction
    for _ in range(5):
        px, lab = last_click_pixels(state)
        for j, r in enumerate(ref):
            r.make_next_click(masks[j])
            click = r.get_clicks()[-1]
            assert (int(px[j, 1]), int(px[j, 0])) == click.coords
            assert int(lab[j]) == int(click.is_positive)
        point, label, cell = OracleClicker()(env, state, env.observe(state))
        masks = [m.numpy() for m in state["mask"]]
        state, _ = env.step_click(state, point, label, cell)
    assert len(set(ref[0].get_clicks()[k].coords for k in range(5))) == 5


def test_results_files_and_table(setup, tmp_path):
    env, data = setup
    ids = torch.arange(len(data))
    curves = [evaluate_clicker(env, data, c, ids, num_clicks=3, progress=False)
              for c in (OracleClicker(), RandomClicker(seed=1), None)]
    summaries = [c.summary(table_clicks=2) for c in curves]
    text = format_table(summaries)
    assert "| oracle |" in text and "| random |" in text and "| no further clicks |" in text
    paths = write_results(summaries, tmp_path, {"note": "test"})
    assert json.loads(paths["json"].read_text())["meta"] == {"note": "test"}
    assert paths["plot"].stat().st_size > 1000
    assert paths["csv"].read_text().splitlines()[0] == "policy,metric,click,mean,std"


def _curves(iou_orig: list[list[float]]) -> Curves:
    iou = np.asarray(iou_orig, dtype=np.float64)
    return Curves("agent", dice=iou, iou=iou, boundary=iou, dice_orig=iou, iou_orig=iou)


def test_noc_capped_by_the_clicks_shows_as_a_lower_bound_and_warns():
    """An episode that never reaches the IoU counts the number of clicks evaluated: the mean is
    then a lower bound, shown as "≥" with a note, and a warning says so."""
    capped = _curves([[0.5, 0.86, 0.95], [0.5, 0.6, 0.7]]).summary(table_clicks=2)
    assert capped["noc85_mean"] == 2.5 and capped["noc85_failures"] == 1  # (2 + 3) / 2
    with pytest.warns(UserWarning, match="NoC is capped"):
        text = format_table([capped])
    row = next(line for line in text.splitlines() if line.startswith("| agent |"))
    assert "| ≥ 2.50 | ≥ 3.00 |" in row
    assert "agent NoC@85: 1 of 2" in text and "within 3 clicks count as 3" in text

    reached = _curves([[0.5, 0.86, 0.95], [0.91, 0.92, 0.93]]).summary(table_clicks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = format_table([reached])
    assert "| 1.50 | 2.00 |" in text and "≥" not in text
