"""How long a run trains is never silently other than asked: a --total-timesteps that is not a
whole number of iterations warns, a resume with nothing left to train is refused, and a resumed
run's TensorBoard shows each step once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ppo.resume import ResumeError
from ppo.train import Trainer, warn_partial_iteration
from tests.test_train import tiny


@pytest.mark.parametrize("total, said", [
    (3, r"--total-timesteps 3 is less than one iteration of 12 env steps \(--num-envs 4 x "
        r"--num-steps 3\): training runs 1 iteration\(s\) = 12 env steps"),
    (30, r"--total-timesteps 30 is not a whole number of iterations of 12 env steps.*runs "
         r"2 iteration\(s\) = 24 env steps"),
])
def test_total_timesteps_off_the_iteration_grid_warns(tmp_path: Path, total: int, said: str) -> None:
    with pytest.warns(UserWarning, match=said):
        warn_partial_iteration(tiny(tmp_path, "x", total_timesteps=total).ppo)


def test_whole_iterations_do_not_warn(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    assert warn_partial_iteration(tiny(tmp_path, "x", total_timesteps=36).ppo) is None
    assert not [w for w in recwarn if "total-timesteps" in str(w.message)]


def test_a_run_of_three_steps_says_it_trains_a_whole_iteration(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="--total-timesteps 3 is less than one iteration"):
        trainer = Trainer(tiny(tmp_path, "short", total_timesteps=3, prior_steps=0))
    trainer.run()
    assert trainer.global_step == 12


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-iteration run with TensorBoard, checkpointed every other iteration (and at its end)."""
    out = tmp_path_factory.mktemp("length")
    Trainer(tiny(out, "run", total_timesteps=36, tensorboard=True, checkpoint_every=2,
                 keep_checkpoints=4)).run()
    return out / "run"


def _resume(finished: Path, total: int):
    return tiny(finished.parent, "run", total_timesteps=total, tensorboard=True,
                checkpoint_every=2, keep_checkpoints=4, resume=str(finished / "last.pt"))


def test_resume_past_total_timesteps_is_refused(finished: Path) -> None:
    with pytest.raises(ResumeError, match=r"nothing to train: .*last\.pt has trained 3 "
                                          r"iteration\(s\) \(36 env steps\), more than "
                                          r"--total-timesteps 24 asks for 2 iteration.*pass "
                                          r"--total-timesteps 48 or more.*sam2click-evaluate "
                                          r"--checkpoint"):
        Trainer(_resume(finished, 24))


def test_resume_of_a_finished_run_says_it_only_evaluates(finished: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    cfg = tiny(tmp_path, "run", total_timesteps=36, tensorboard=True, checkpoint_every=2,
               keep_checkpoints=4, resume=str(run / "last.pt"))
    with pytest.warns(UserWarning, match=r"nothing to train: .*has trained all 3 iteration\(s\).*"
                                         r"only the evaluation runs"):
        trainer = Trainer(cfg)
    trainer.run()
    assert trainer.iteration == 3


def test_tensorboard_after_resume_shows_each_step_once(finished: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    # As if killed after iteration 3 was logged but before its checkpoint: resume from 2.
    Trainer(tiny(tmp_path, "run", total_timesteps=36, tensorboard=True, checkpoint_every=2,
                 keep_checkpoints=4, resume=str(run / "ckpt_00000002.pt"))).run()
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars("mean_reward")]
    assert steps == [12, 24, 36]
    assert len(list((run / "tb").iterdir())) == 2  # both runs' files; the first run's step 36 hidden
