"""Nothing a user made is lost: run folders are owned (refused, overwritten only on request,
locked), evaluate writes its own folder, a full disk keeps the previous files, and bad values
get errors that say what to do."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ppo.checkpoint import CheckpointKeeper, load_checkpoint, save_checkpoint
from ppo.factory import DeviceError, resolve_device
from ppo.run_dir import RunFolderError, RunLock, RunLockedError, check_new_run, run_files
from ppo.train import Trainer
from sam_batch.atomic_io import DiskFullError
from tests.folders import copy_folder, snapshot
from tests.test_seeds import TINY_FLAGS
from tests.test_train import tiny


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run of ``scripts.train`` (train + evaluation) to copy into each test's folder."""
    from scripts import train

    out = tmp_path_factory.mktemp("runs")
    assert train.main(["--out-dir", str(out), *TINY_FLAGS]) == 0
    return out / "tiny"


def copy_run(finished: Path, tmp_path: Path) -> Path:
    return copy_folder(finished, tmp_path, "tiny")


# ---- a folder holding a run ------------------------------------------------------------------

def test_train_into_a_folder_holding_a_run_is_refused_and_changes_nothing(finished, tmp_path):
    from scripts import train

    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    with pytest.raises(SystemExit) as refused:
        train.main(["--out-dir", str(tmp_path), *TINY_FLAGS])
    msg = str(refused.value.code)
    assert msg.startswith("sam2click-train: error:") and str(run) in msg
    assert f"--resume {run / 'last.pt'}" in msg and "--overwrite" in msg
    assert snapshot(run) == before


def test_a_folder_left_before_the_first_checkpoint_offers_only_overwrite(tmp_path):
    run = tmp_path / "early"
    run.mkdir()
    (run / "progress.csv").write_text("iteration,global_step\n1,12\n")
    with pytest.raises(RunFolderError, match="already holds a run.*progress.csv") as refused:
        Trainer(tiny(tmp_path, "early"))
    assert "--resume" not in str(refused.value) and "--overwrite" in str(refused.value)


def test_overwrite_removes_only_the_runs_files_and_says_which(finished, tmp_path, capsys):
    from scripts import train

    run = copy_run(finished, tmp_path)
    (run / "notes.md").write_text("my notes")
    (run / "eval" / "my_figure.png").write_bytes(b"mine")
    (run / "ckpt_00000099.pt").write_bytes((run / "last.pt").read_bytes())  # an old periodic
    assert train.main(["--out-dir", str(tmp_path), *TINY_FLAGS, "--overwrite"]) == 0
    out = capsys.readouterr().out
    notice = next(line for line in out.splitlines() if line.startswith("--overwrite: removed"))
    for name in ("last.pt", "config.json", "progress.csv", "ckpt_00000099.pt",
                 "eval/results.json"):
        assert name in notice, name
    assert "kept: eval, notes.md" in notice
    assert (run / "notes.md").read_text() == "my notes"
    assert (run / "eval" / "my_figure.png").read_bytes() == b"mine"
    assert not (run / "ckpt_00000099.pt").exists()  # the old run's checkpoints are gone
    rows = (run / "progress.csv").read_text().splitlines()
    assert len(rows) == len((finished / "progress.csv").read_text().splitlines())  # one run's
    assert not (run / "run.lock").exists()


def test_resume_and_overwrite_together_are_refused(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    with pytest.raises(RunFolderError, match="contradict.*would delete the checkpoint"):
        check_new_run(run, resume=str(run / "last.pt"), overwrite=True)


def test_a_run_constructed_before_another_filled_the_folder_is_refused_at_start(tmp_path):
    first, second = Trainer(tiny(tmp_path, "race", total_timesteps=12)), \
        Trainer(tiny(tmp_path, "race", total_timesteps=12))
    first.run()
    with pytest.raises(RunFolderError, match="already holds a run"):
        second.run()
    assert load_checkpoint(tmp_path / "race" / "last.pt")["counters"]["iteration"] == 1


# ---- the lock --------------------------------------------------------------------------------

def test_a_second_live_run_in_the_folder_is_stopped_by_the_lock(tmp_path):
    trainer = Trainer(tiny(tmp_path, "locked", total_timesteps=12))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "locked" / "run.lock"
        lock.parent.mkdir(parents=True)
        info = {**RunLock(lock.parent).info(), "pid": holder.pid}
        lock.write_text(json.dumps(info))
        with pytest.raises(RunLockedError, match=rf"in use by another training run \(process "
                                                 rf"{holder.pid} on .*started"):
            trainer.run()
        assert json.loads(lock.read_text()) == info  # the live run's lock is left alone
        assert not (tmp_path / "locked" / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()


def test_two_runs_in_one_process_do_not_share_a_folder(tmp_path):
    trainer = Trainer(tiny(tmp_path, "twice", total_timesteps=12))
    with RunLock(tmp_path / "twice"):  # another run (same pid) holds the folder
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            trainer.run()


def test_a_dead_runs_lock_is_taken_over_with_a_warning_and_removed_at_the_end(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "stale" / "run.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({**RunLock(lock.parent).info(), "pid": dead.pid}))
    trainer = Trainer(tiny(tmp_path, "stale", total_timesteps=12))
    with pytest.warns(UserWarning, match=f"taking over the lock of process {dead.pid}"):
        trainer.run()
    assert not lock.exists() and (tmp_path / "stale" / "last.pt").is_file()


def test_the_lock_is_removed_when_a_run_dies(tmp_path):
    trainer = Trainer(tiny(tmp_path, "dies"))

    def boom():
        assert (tmp_path / "dies" / "run.lock").is_file()  # held while training
        raise RuntimeError("killed by the test")

    trainer.iterate = boom
    with pytest.raises(RuntimeError, match="killed by the test"):
        trainer.run()
    assert not (tmp_path / "dies" / "run.lock").exists()


# ---- evaluate's own folder -------------------------------------------------------------------

def test_evaluate_writes_its_own_folder_and_refuses_to_overwrite_it(finished, tmp_path, capsys):
    from scripts import evaluate

    run = copy_run(finished, tmp_path)
    training_eval = snapshot(run / "eval")
    argv = ["--checkpoint", str(run / "last.pt"), "--num-clicks", "3", "--device", "cpu",
            "--no-baselines"]
    assert evaluate.main(argv) == 0
    out = run / "eval_last_val"
    assert f"results written to {out}" in capsys.readouterr().out
    assert (out / "results.json").is_file() and snapshot(run / "eval") == training_eval
    first = (out / "results.json").read_bytes()
    with pytest.raises(SystemExit, match=r"eval_last_val already holds evaluation results.*"
                                         r"--overwrite"):
        evaluate.main(argv)
    assert (out / "results.json").read_bytes() == first
    with pytest.raises(SystemExit, match="already holds evaluation results"):
        evaluate.main([*argv, "--out", str(run / "eval")])  # not over training's results either
    assert snapshot(run / "eval") == training_eval
    assert evaluate.main([*argv, "--overwrite", "--eval-split", "test"]) == 0
    assert (run / "eval_last_test" / "results.json").is_file()
    assert evaluate.main([*argv, "--overwrite"]) == 0


# ---- a full disk -----------------------------------------------------------------------------

@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name)``: every fsync of a file whose name contains ``name`` fails with
    ENOSPC, as on a full disk (the writes before it may have landed in the page cache)."""
    real = os.fsync

    def arm(name: str):
        def fsync(fd):
            if name in os.readlink(f"/proc/self/fd/{fd}"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    yield arm
    monkeypatch.setattr(os, "fsync", real)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
def test_a_full_disk_during_training_loses_nothing(tmp_path, full_disk):
    trainer = Trainer(tiny(tmp_path, "full", eval_every=1))
    trainer.run(stop_at=2)
    run = tmp_path / "full"
    before = snapshot(run)
    for name in ("config.json", "progress.csv", "last.pt"):
        full_disk(name)
        with pytest.raises(DiskFullError, match=rf"no space left.*{name}.*intact"):
            trainer.run()
        full_disk("never")
        after = snapshot(run)
        if name == "last.pt":  # the iteration's row was logged before its checkpoint failed
            assert after.pop("progress.csv").startswith(before.pop("progress.csv"))
        assert after == before, name  # every previous file, byte for byte
        assert not (run / "run.lock").exists()
    assert load_checkpoint(run / "last.pt")["counters"]["iteration"] == 2
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
def test_a_full_disk_ends_scripts_train_with_a_clear_message(tmp_path, full_disk):
    from scripts import train

    full_disk("last.pt")
    with pytest.raises(SystemExit) as stopped:
        train.main(["--out-dir", str(tmp_path), *TINY_FLAGS])
    msg = str(stopped.value.code)
    assert msg.startswith("sam2click-train: error: no space left on the device holding")
    assert "last.pt" in msg and "intact" in msg
    assert not (tmp_path / "tiny" / "run.lock").exists()


def test_a_full_disk_while_linking_a_periodic_checkpoint_keeps_last(tmp_path, monkeypatch):
    keeper = CheckpointKeeper(tmp_path, keep_last=2)
    keeper.save(1, {"w": 1})

    def no_link(*a):
        raise OSError(errno.EXDEV, "cross-device")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(DiskFullError, match="ckpt_00000002.pt.*intact"):
        keeper.save(2, {"w": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["w"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000001.pt", "last.pt"]


# ---- errors that say what to do --------------------------------------------------------------

def test_zero_minibatches_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"num_minibatches must be >= 1.*got 0.*--num-minibatches"):
        Trainer(tiny(tmp_path, "zero", num_minibatches=0))


@pytest.mark.parametrize("command", ["evaluate", "baselines"])
def test_batch_size_zero_is_a_clear_error(command, tmp_path):
    import importlib

    main = importlib.import_module(f"scripts.{command}").main
    argv = ["--batch-size", "0", "--device", "cpu"]
    argv += ["--checkpoint", str(tmp_path / "x.pt")] if command == "evaluate" else []
    with pytest.raises(SystemExit, match=r"--batch-size must be >= 1, got 0; pass e\.g\."):
        main(argv)


def test_an_unknown_device_is_a_clear_error(tmp_path):
    from scripts import train

    with pytest.raises(DeviceError, match=r"--device 'foo' is not a device: expected auto, cpu"):
        resolve_device("foo")
    with pytest.raises(SystemExit, match=r"sam2click-train: error: --device 'foo'.*--device cpu"):
        train.main(["--out-dir", str(tmp_path), *TINY_FLAGS, "--device", "foo"])


def test_run_files_are_exactly_what_a_run_writes(finished):
    names = {str(p.relative_to(finished)) for p in run_files(finished)}
    assert names == {str(p.relative_to(finished)) for p in finished.rglob("*") if p.is_file()}


def test_evaluate_rejects_a_checkpoint_file_that_is_text(tmp_path):
    from scripts import evaluate

    text = tmp_path / "last.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(SystemExit, match="last.pt.*not a checkpoint"):
        evaluate.main(["--checkpoint", str(text), "--device", "cpu"])
    save_checkpoint(tmp_path / "w.pt", {"w": 1})
    with pytest.raises(SystemExit, match="w.pt.*not one written by sam2click-train"):
        evaluate.main(["--checkpoint", str(tmp_path / "w.pt"), "--device", "cpu"])
