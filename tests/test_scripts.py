"""The user-facing commands end to end on a tiny run: train -> evaluate -> render."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.test_seeds import TINY_FLAGS


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from scripts import train

    out = tmp_path_factory.mktemp("runs")
    assert train.main(["--out-dir", str(out), *TINY_FLAGS]) == 0
    return out / "tiny"


def test_train_writes_results_and_checkpoints(tiny_run):
    results = json.loads((tiny_run / "eval" / "results.json").read_text())
    names = [r["name"] for r in results["results"]]
    assert names == ["agent (PPO)", "oracle", "oracle (grid)", "learned clicker",
                     "no further clicks", "random"]
    assert results["meta"]["mask_prior"]["prior_steps"] == 2
    assert results["meta"]["config"]["run"]["seed"] == 1 and results["results"][0]["max_clicks"] == 3
    for name in ("last.pt", "config.json", "progress.csv", "eval/results.csv",
                 "eval/dice_vs_clicks.png"):
        assert (tiny_run / name).is_file(), name


def test_evaluate_command_reproduces_the_agent_row(tiny_run, tmp_path, capsys):
    from scripts import evaluate

    out = tmp_path / "ev"
    assert evaluate.main(["--checkpoint", str(tiny_run / "last.pt"), "--out", str(out),
                          "--num-clicks", "3", "--device", "cpu", "--seed", "1"]) == 0
    assert "| agent (PPO) |" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())["results"]
    first = json.loads((tiny_run / "eval" / "results.json").read_text())["results"]
    # greedy agent and oracle are deterministic: the same curves as the train command's eval
    for a, b in zip(first[:5], again[:5]):
        assert a["name"] == b["name"]
        assert a["dice_mean"] == pytest.approx(b["dice_mean"], abs=1e-6)


def test_evaluate_command_rejects_a_missing_checkpoint(tmp_path):
    from scripts import evaluate

    with pytest.raises(SystemExit, match="sam2click-evaluate: error: .*nope.pt.*does not exist"):
        evaluate.main(["--checkpoint", str(tmp_path / "nope.pt"), "--device", "cpu"])


def test_render_episodes_writes_one_png_per_episode(tiny_run, tmp_path, monkeypatch):
    from scripts import render

    out = tmp_path / "eps"
    monkeypatch.setattr(sys, "argv", ["render", "episodes", "--checkpoint",
                                      str(tiny_run / "last.pt"), "--out", str(out),
                                      "--episodes", "2", "--clicks", "3"])
    render.main()
    assert torch.is_grad_enabled()  # the command does not switch autograd off for its caller
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert not list(out.glob(".*"))  # no temp files left behind


def test_baselines_command_has_the_learned_clicker_row(tmp_path, capsys):
    from scripts import baselines

    out = tmp_path / "base"
    assert baselines.main(["--eval-images", "3", "--train-images", "4", "--prior-steps", "2",
                           "--prior-width", "4", "--num-clicks", "3", "--device", "cpu",
                           "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| learned clicker |" in printed and "learned clicker: U-Net width 4" in printed
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert "2 steps in" in meta["learned_clicker"]
    # a second run into the same folder is refused (the results stay), unless --overwrite
    before = (out / "results.json").read_bytes()
    with pytest.raises(SystemExit, match="already holds evaluation results"):
        baselines.main(["--eval-images", "3", "--prior-steps", "0", "--device", "cpu",
                        "--out", str(out)])
    assert (out / "results.json").read_bytes() == before
    assert baselines.main(["--eval-images", "3", "--prior-steps", "0", "--num-clicks", "2",
                           "--device", "cpu", "--out", str(out), "--overwrite"]) == 0
    assert (out / "results.json").read_bytes() != before
