"""Mean ± std over training seeds: the aggregation arithmetic and the seeds command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpu_env.evaluation import aggregate_seeds, format_seed_tables, load_results, write_seeds


def fake_run(seed: int, agent: list[float], base: list[float], noc90: float = 19.0,
             images: int = 8, max_clicks: int = 20, split: str = "val") -> dict:
    def row(name, dice, noc):
        n = len(dice)
        return {"name": name, "num_images": images, "clicks": n - 1, "max_clicks": max_clicks,
                **{f"{m}_mean": list(dice) for m in ("dice", "dice_orig", "iou", "boundary")},
                **{f"{m}_std": [0.1] * n for m in ("dice", "dice_orig", "iou", "boundary")},
                "noc85_mean": noc - 1, "noc85_std": 1.0, "noc90_mean": noc, "noc90_std": 1.0}

    return {"meta": {"config": {"seed": seed, "dataset": "synthetic"}, "eval_split": split,
                     "path": f"run{seed}"},
            "results": [row("agent (PPO)", agent, noc90), row("no further clicks", base, 20.0)]}


def test_mean_std_over_seeds_and_margins():
    base = [0.5, 0.5, 0.5]
    runs = [fake_run(1, [0.5, 0.60, 0.62], base, 18.0),
            fake_run(2, [0.5, 0.52, 0.49], base, 19.0),
            fake_run(3, [0.5, 0.56, 0.58], base, 20.0)]
    agg = aggregate_seeds(runs)
    assert agg["seeds"] == [1, 2, 3]
    agent = agg["rows"][0]
    np.testing.assert_allclose(agent["dice_mean"], [0.5, 0.56, (0.62 + 0.49 + 0.58) / 3])
    # sample std (ddof=1) of 0.60, 0.52, 0.56 is 0.04
    np.testing.assert_allclose(agent["dice_std"][1], 0.04, atol=1e-12)
    (diff,) = agg["differences"]  # the fake runs have no oracle row
    assert diff["baseline"] == "no further clicks"
    np.testing.assert_allclose(diff["dice_mean"], [0.0, 0.06, (0.12 - 0.01 + 0.08) / 3])
    np.testing.assert_allclose(diff["dice_min"], [0.0, 0.02, -0.01])
    assert diff["noc90_mean"] == pytest.approx(-1.0) and diff["noc90_max"] == pytest.approx(0.0)
    assert agent["noc90_mean"] == pytest.approx(19.0) and agent["noc90_std"] == pytest.approx(1.0)
    text = format_seed_tables(agg)
    assert "0.560 ± 0.040" in text and "+0.060 ± 0.040 (+0.020)" in text
    assert "(-0.010)" in text  # the worst seed below the baseline is shown, not hidden
    assert "-1.00 ± 1.00 (+0.00)" in text


def test_differences_to_the_oracle():
    runs = []
    for seed, (agent, oracle, noc) in enumerate([(0.86, 0.87, 13.0), (0.85, 0.87, 15.0)], 1):
        run = fake_run(seed, [0.5, agent], [0.5, 0.5], noc90=noc)
        oracle_row = dict(run["results"][1], name="oracle", dice_mean=[0.5, oracle],
                          noc90_mean=14.0)
        run["results"].append(oracle_row)
        runs.append(run)
    agg = aggregate_seeds(runs)
    to_oracle = next(d for d in agg["differences"] if d["baseline"] == "oracle")
    np.testing.assert_allclose(to_oracle["dice_mean"][1], -0.015)
    np.testing.assert_allclose(to_oracle["dice_min"][1], -0.02)
    assert to_oracle["noc90_mean"] == pytest.approx(0.0)
    assert to_oracle["noc90_max"] == pytest.approx(1.0)  # the worse seed needs one more click
    assert [d["baseline"] for d in agg["differences"]] == ["no further clicks", "oracle"]


def test_incomparable_runs_are_refused():
    base = [0.5, 0.5]
    with pytest.raises(ValueError, match="not comparable.*--num-clicks 20"):
        aggregate_seeds([fake_run(1, [0.5, 0.6], base), fake_run(2, [0.5, 0.6], base,
                                                                   max_clicks=6)])
    with pytest.raises(ValueError, match="not comparable"):
        aggregate_seeds([fake_run(1, [0.5, 0.6], base), fake_run(2, [0.5, 0.6], base,
                                                                   split="test")])
    short = fake_run(2, [0.5, 0.6], base)
    short["results"] = short["results"][:1]
    with pytest.raises(ValueError, match="no rows"):
        aggregate_seeds([fake_run(1, [0.5, 0.6], base), short])
    with pytest.raises(ValueError, match="at least 2"):
        aggregate_seeds([fake_run(1, [0.5, 0.6], base)])


def test_load_results_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_results(tmp_path / "nope" / "results.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="bad.json"):
        load_results(bad)


def test_write_seeds_outputs(tmp_path):
    base = [0.5, 0.5]
    agg = aggregate_seeds([fake_run(1, [0.5, 0.6], base), fake_run(2, [0.5, 0.7], base)])
    paths = write_seeds(agg, tmp_path / "summary")
    assert json.loads(paths["json"].read_text())["rows"][0]["dice_mean"] == pytest.approx(
        [0.5, 0.65])
    assert "0.650 ± 0.071" in paths["md"].read_text()
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "summary").glob(".*tmp*"))


TINY_FLAGS = ["--device", "cpu", "--train-images", "6", "--eval-images", "3", "--num-envs", "4",
              "--num-steps", "3", "--total-timesteps", "24", "--num-minibatches", "2",
              "--update-epochs", "1", "--width", "4", "--max-clicks", "2", "--eval-clicks", "3",
              "--no-tensorboard", "--no-progress", "--exp-name", "tiny", "--prior-steps", "2",
              "--prior-width", "4"]


def test_seeds_command_trains_each_seed_then_reuses(tmp_path, capsys):
    from scripts import seeds

    argv = ["--seeds", "3", "4", "--out-dir", str(tmp_path), *TINY_FLAGS]
    assert seeds.main(argv) == 0
    out = capsys.readouterr().out
    assert "mean ± std over 2 training seeds (3, 4" in out
    summary = json.loads((tmp_path / "tiny_seeds" / "seeds.json").read_text())
    assert summary["seeds"] == [3, 4]
    assert summary["sources"] == [str(tmp_path / f"tiny_seed{s}" / "eval" / "results.json")
                                  for s in (3, 4)]
    agent = summary["rows"][0]
    assert agent["name"] == "agent (PPO)" and len(agent["dice_seeds"]) == 2
    for s in (3, 4):
        cfg = json.loads((tmp_path / f"tiny_seed{s}" / "config.json").read_text())
        assert cfg["run"]["seed"] == s
    last = tmp_path / "tiny_seed3" / "last.pt"
    stamp = last.stat().st_mtime_ns
    assert seeds.main(argv) == 0
    assert "seed 3: reusing" in capsys.readouterr().out
    assert last.stat().st_mtime_ns == stamp  # not trained again

    # aggregate-only mode over the same evaluations gives the same table
    assert seeds.main(["--results", *summary["sources"],
                       "--summary-dir", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "seeds.json").read_text())
    assert again["rows"] == summary["rows"]

    # the same folders with another config are refused, not overwritten
    with pytest.raises(SystemExit, match="another config.*width"):
        seeds.main([*argv, "--width", "8"])
    assert last.stat().st_mtime_ns == stamp


def test_seeds_command_resumes_an_interrupted_seed(tmp_path, capsys):
    from scripts import seeds
    from ppo.checkpoint import load_checkpoint

    argv = ["--seeds", "5", "6", "--out-dir", str(tmp_path), *TINY_FLAGS]
    assert seeds.main(argv) == 0
    done = load_checkpoint(tmp_path / "tiny_seed5" / "last.pt")
    # simulate an interruption of seed 5 after training: no evaluation left behind
    for p in (tmp_path / "tiny_seed5" / "eval").iterdir():
        p.unlink()
    assert seeds.main(argv) == 0
    out = capsys.readouterr().out
    assert "seed 5: training" in out and "resuming" in out and "seed 6: reusing" in out
    again = load_checkpoint(tmp_path / "tiny_seed5" / "last.pt")
    assert again["counters"] == done["counters"]  # resumed at the end: no extra training
    assert (tmp_path / "tiny_seed5" / "eval" / "results.json").is_file()


def test_seeds_command_rejects_bad_arguments():
    from scripts import seeds

    with pytest.raises(SystemExit, match="either --seeds"):
        seeds.main([])
    with pytest.raises(SystemExit, match="not --seed"):
        seeds.main(["--seeds", "1", "2", "--seed", "3"])
    with pytest.raises(SystemExit, match="two distinct"):
        seeds.main(["--seeds", "1", "1"])
