"""Checkpoints (ppo/checkpoint.py): round trip, atomicity, corrupt files, keeping policy."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from ppo import checkpoint as ckpt
from ppo.checkpoint import (
    CheckpointError,
    CheckpointKeeper,
    capture_training_state,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
)


@dataclass(frozen=True)
class RunConfig:
    lr: float = 1e-3
    name: str = "run"


def _training_objects(seed: int):
    torch.manual_seed(seed)  # parameter init only
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 - it / 100)
    gens = {"env": torch.Generator().manual_seed(seed),
            "minibatch": torch.Generator().manual_seed(seed + 1)}
    return model, opt, sched, gens


def _train_step(model, opt, sched, gens):
    x = torch.randn(5, 4, generator=gens["env"])
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    sched.step()


def test_round_trip_resumes_exactly(tmp_path):
    model, opt, sched, gens = _training_objects(0)
    _train_step(model, opt, sched, gens)
    state = capture_training_state(model=model, optimizer=opt, scheduler=sched, generators=gens,
                                   counters={"iteration": 7, "env_steps": 7 * 1024},
                                   config=RunConfig())
    save_checkpoint(tmp_path / "run" / "last.pt", state)
    # the continuation that the restored run must reproduce
    _train_step(model, opt, sched, gens)
    expected = [p.detach().clone() for p in model.parameters()]
    expected_draw = torch.rand(3, generator=gens["minibatch"])

    model2, opt2, sched2, gens2 = _training_objects(1)  # different init, different streams
    counters, config = restore_training_state(
        load_checkpoint(tmp_path / "run" / "last.pt"), model=model2, optimizer=opt2,
        scheduler=sched2, generators=gens2,
    )
    assert counters == {"iteration": 7, "env_steps": 7168}
    assert config == {"lr": 1e-3, "name": "run"}
    _train_step(model2, opt2, sched2, gens2)
    for a, b in zip(expected, model2.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(expected_draw, torch.rand(3, generator=gens2["minibatch"]))
    assert sched2.get_last_lr() == sched.get_last_lr()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_round_trip(tmp_path):
    g = torch.Generator(device="cuda").manual_seed(3)
    save_checkpoint(tmp_path / "g.pt", {"generators": ckpt.capture_generators({"cuda": g})})
    expected = torch.rand(4, generator=g, device="cuda")
    ckpt.restore_generators({"cuda": g}, load_checkpoint(tmp_path / "g.pt", "cuda")["generators"])
    assert torch.equal(expected, torch.rand(4, generator=g, device="cuda"))


def test_restore_rejects_mismatched_generators(tmp_path):
    model, opt, sched, gens = _training_objects(0)
    state = capture_training_state(model=model, generators=gens)
    with pytest.raises(CheckpointError, match=r"missing \['rollout'\], unexpected \['env'\]"):
        restore_training_state(state, model=model, generators={"rollout": gens["env"],
                                                               "minibatch": gens["minibatch"]})


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def _listing(path):
    return sorted(os.listdir(path))


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"step": 1, "w": torch.arange(1000)})
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(target, {"step": 2, "w": torch.arange(1000), "bad": _Unpicklable()})
    assert target.read_bytes() == before and _listing(tmp_path) == ["last.pt"]
    assert load_checkpoint(target)["step"] == 1


def test_crash_after_partial_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"step": 1})

    def fsync_then_die(fd):
        raise KeyboardInterrupt  # e.g. the job is killed after the bytes were written

    monkeypatch.setattr(ckpt.os, "fsync", fsync_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, {"step": 2, "w": torch.zeros(10_000)})
    monkeypatch.undo()
    assert load_checkpoint(target)["step"] == 1 and _listing(tmp_path) == ["last.pt"]


def test_corrupt_and_foreign_files_name_the_file(tmp_path):
    good = tmp_path / "ckpt_00000001.pt"
    save_checkpoint(good, {"w": torch.randn(256, 256)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=rf"{path.name}.*(truncated or corrupt|corrupt)"):
            load_checkpoint(path)

    foreign = tmp_path / "foreign.pt"
    torch.save({"w": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a checkpoint of format"):
        load_checkpoint(foreign)

    pickled_object = tmp_path / "object.pt"
    torch.save({"format": ckpt.FORMAT, "state": {"cfg": RunConfig()}}, pickled_object)
    with pytest.raises(CheckpointError, match="object.pt.*never unpickled") as refused:
        load_checkpoint(pickled_object)
    # PyTorch's advice to retry unsafely is not relayed, neither in the message nor its cause
    assert "weights_only" not in str(refused.value) and "safe_globals" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__

    with pytest.raises(CheckpointError, match="missing.pt.*does not exist.*ckpt_00000001.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_keeper_policy(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_last=2)
    metrics = [0.1, 0.5, 0.3, 0.7, 0.6]
    for it, metric in enumerate(metrics, start=1):
        keeper.save(it, {"iteration": it}, metric=metric)
    assert _listing(tmp_path) == ["best.pt", "ckpt_00000004.pt", "ckpt_00000005.pt", "last.pt"]
    assert load_checkpoint(keeper.last)["iteration"] == 5
    assert load_checkpoint(keeper.best)["iteration"] == 4
    assert load_checkpoint(tmp_path / "ckpt_00000004.pt")["iteration"] == 4

    # resuming keeps the best-so-far: a worse metric after restart must not replace best.pt
    resumed = CheckpointKeeper(tmp_path, keep_last=2)
    resumed.load_state_dict(load_checkpoint(keeper.last))
    resumed.save(6, {"iteration": 6}, metric=0.65)
    assert load_checkpoint(resumed.best)["iteration"] == 4
    resumed.save(7, {"iteration": 7}, metric=0.9)
    assert load_checkpoint(resumed.best)["iteration"] == 7


def test_keeper_every_and_min_mode(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_last=10, every=2, mode="min")
    for it, loss in zip(range(1, 6), [3.0, 1.0, 2.0, 0.5, 4.0]):
        keeper.save(it, {"iteration": it}, metric=loss)
    assert [p.name for p in keeper.periodic()] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert load_checkpoint(keeper.best)["iteration"] == 4
    with pytest.raises(ValueError, match="mode"):
        CheckpointKeeper(tmp_path, mode="best")
