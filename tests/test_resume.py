"""Resume checks the checkpoint: a training checkpoint, of a config this run can continue; the
rows logged after the checkpoint are cut from progress.csv."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
import torch

from ppo.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ppo.resume import ResumeError, config_differences, flatten_config
from ppo.train import Trainer
from tests.test_train import tiny


def base(out: Path, **changes):
    """The config of ``base_run`` (in ``out``) with ``changes``."""
    return tiny(out, "base", keep_checkpoints=4, **changes)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """The folder of a finished 4-iteration run with a checkpoint at every iteration."""
    out = tmp_path_factory.mktemp("resume")
    Trainer(base(out)).run()
    return out / "base"


def resumed(run: Path, **changes):
    return base(run.parent, resume=str(run / "last.pt"), **changes)


@pytest.mark.parametrize("changes, named", [
    ({"width": 8}, ["width: checkpoint 4, now 8"]),
    ({"policy": "proto", "mask_prior": False},
     [r"policy(\.kind)?: checkpoint 'spatial', now 'proto'",
      "mask_prior: checkpoint True, now False"]),
    ({"mode": "simulated_user"}, ["mode: checkpoint 'auto', now 'simulated_user'"]),
    ({"num_envs": 8}, ["num_envs: checkpoint 4, now 8"]),
    ({"train_images": 3}, ["train_images: checkpoint 6, now 3"]),
    ({"dataset": "synthetic:7"}, ["dataset: checkpoint 'synthetic', now 'synthetic:7'"]),
    ({"grid_size": 16}, ["grid_size: checkpoint 32, now 16"]),
    ({"learning_rate": 3e-4, "gamma": 0.9},
     ["learning_rate: checkpoint 0.001, now 0.0003", "gamma: checkpoint 0.5, now 0.9"]),
])
def test_resume_with_another_setting_is_refused_naming_it(base_run, changes, named):
    with pytest.raises(ResumeError) as refused:
        Trainer(resumed(base_run, **changes))
    msg = str(refused.value)
    assert "last.pt" in msg and "start a new run" in msg and "checkpoint's values" in msg
    for line in named:  # the name may carry its config section (env.grid_size)
        assert re.search(line, msg), msg
    assert msg.count(", now ") == len(named)  # only the settings that differ


def test_resume_may_change_length_cadence_and_logging(base_run, tmp_path):
    """Safe settings change freely; progress.csv is cut back to the checkpoint's iteration, so
    the resumed run logs iterations 3 and 4 once each."""
    run = tmp_path / "base"
    shutil.copytree(base_run, run)
    cfg = tiny(tmp_path, "base", resume=str(run / "ckpt_00000002.pt"), total_timesteps=5 * 12,
               log_every=1, checkpoint_every=2, keep_checkpoints=1, eval_every=0,
               progress=False, eval_clicks=7, device="auto")
    trainer = Trainer(cfg)
    assert trainer.iteration == 2
    trainer.run()
    with open(run / "progress.csv") as f:
        iterations = [int(r["iteration"]) for r in csv.DictReader(f)]
    assert iterations == [1, 2, 3, 4, 5]
    assert load_checkpoint(run / "last.pt")["counters"]["iteration"] == 5


def test_progress_is_cut_to_the_checkpoint_iteration_on_resume(base_run, tmp_path):
    run = tmp_path / "base"
    shutil.copytree(base_run, run)
    (run / "progress.csv").write_text((run / "progress.csv").read_text() + "2,24,1.0")  # a torn row
    trainer = Trainer(base(tmp_path, resume=str(run / "ckpt_00000003.pt")))
    with trainer.claim_folder():
        with open(run / "progress.csv") as f:
            assert [int(r["iteration"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_resume_from_a_text_file_names_it(base_run, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes\n")
    with pytest.raises(CheckpointError, match="notes.txt.*not a checkpoint"):
        Trainer(base(base_run.parent, resume=str(text)))


def test_resume_from_a_checkpoint_that_is_not_a_training_run_names_it(base_run, tmp_path):
    other = tmp_path / "weights.pt"
    save_checkpoint(other, {"w": torch.ones(2)})
    with pytest.raises(CheckpointError, match="weights.pt.*not one of a training run.*model"):
        Trainer(base(base_run.parent, resume=str(other)))


def test_differences_are_found_in_nested_sections_with_the_safe_set_by_leaf_name():
    saved = {"run": {"exp_name": "a", "total_timesteps": 10, "device": "cpu"},
             "env": {"grid_size": 32, "max_clicks": 5}, "ppo": {"num_envs": 4}}
    now = {"run": {"exp_name": "b", "total_timesteps": 99, "device": "cpu"},
           "env": {"grid_size": 16, "max_clicks": 5}, "ppo": {"num_envs": 4, "extra": 1}}
    assert flatten_config(saved)["env.grid_size"] == 32
    assert config_differences(saved, now) == [("env.grid_size", 32, 16),
                                              ("ppo.extra", "<absent>", 1)]


def test_device_auto_and_the_device_it_means_are_the_same_setting():
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    assert config_differences({"device": "auto"}, {"device": kind}) == []
    other = "cpu" if kind == "cuda" else "cuda"
    assert config_differences({"device": "auto"}, {"device": other}) == [
        ("device", "auto", other)]
