"""The train loop: exact resume in a new process, NaN stop, logs and resolved config."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ppo.checkpoint import load_checkpoint
from ppo.config import TrainConfig
from ppo.train import NonFiniteError, Trainer

ROOT = Path(__file__).resolve().parents[1]


def tiny(tmp_path: Path, name: str, **kw) -> TrainConfig:
    cfg = TrainConfig().replace(exp_name=name, out_dir=str(tmp_path), device="cpu", train_images=6,
                      eval_images=4, num_envs=4, num_steps=3, total_timesteps=4 * 12,
                      num_minibatches=2, update_epochs=2, width=4, log_every=1,
                      checkpoint_every=1, eval_every=0, tensorboard=False, progress=False,
                      max_clicks=2, prior_steps=2, prior_width=4)
    return cfg.replace(**kw)


def test_resume_in_new_process_is_bit_identical(tmp_path):
    straight = Trainer(tiny(tmp_path, "straight"))
    straight.run()
    split = Trainer(tiny(tmp_path, "split"))
    split.run(stop_at=2)
    assert split.iteration == 2
    ckpt = tmp_path / "split" / "last.pt"
    code = (
        "import json,sys; from ppo.config import TrainConfig; from ppo.train import Trainer;"
        "cfg = TrainConfig.from_dict(json.loads(sys.argv[1])); Trainer(cfg).run()"
    )
    cfg = tiny(tmp_path, "split", resume=str(ckpt))
    subprocess.run([sys.executable, "-c", code, json.dumps(cfg.to_dict())], check=True, cwd=ROOT)
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")
    assert resumed["counters"]["iteration"] == 4
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(resumed["model"][k], v), k
    for k, v in straight.state.items():
        assert torch.equal(resumed["env_state"][k], v), k
    ref = straight.state_dict()
    assert torch.equal(resumed["generators"]["sampler"], ref["generators"]["sampler"])


def test_nonfinite_reward_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = Trainer(tiny(tmp_path, "nan"))
    trainer.run(stop_at=2)
    good = load_checkpoint(tmp_path / "nan" / "last.pt")
    step = trainer.env.step

    def poisoned(state, action):
        nxt, out = step(state, action)
        out["reward"] = out["reward"] * float("nan")
        return nxt, out

    trainer.env.step = poisoned
    with pytest.raises(NonFiniteError, match="rewards"):
        trainer.run()
    kept = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert kept["counters"]["iteration"] == good["counters"]["iteration"] == 2
    for k, v in good["model"].items():
        assert torch.equal(kept["model"][k], v)


def test_run_writes_config_csv_and_checkpoints(tmp_path):
    cfg = tiny(tmp_path, "logs", keep_checkpoints=2)
    trainer = Trainer(cfg)
    row = trainer.run()
    run = tmp_path / "logs"
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    lines = (run / "progress.csv").read_text().splitlines()
    assert len(lines) == 1 + cfg.ppo.num_iterations and lines[0].startswith("iteration,global_step,sps")
    assert {p.name for p in run.glob("ckpt_*.pt")} == {"ckpt_00000003.pt", "ckpt_00000004.pt"}
    assert (run / "last.pt").exists()
    assert row["global_step"] == cfg.ppo.num_iterations * cfg.ppo.batch_size
    for key in ("loss_objective", "loss_critic", "loss_entropy", "approx_kl", "clip_fraction"):
        assert key in row and row[key] == row[key]  # present and not NaN


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_minibatches"):
        Trainer(tiny(tmp_path, "bad", num_minibatches=5))
