"""Multi-process training on the CPU (gloo, two ranks spawned like torchrun's workers):
identical parameters after every update, the all-reduced update equals the full-batch one,
resume across world sizes, data sharding, and failures that stop every rank."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ppo import distributed as dist_utils
from ppo.checkpoint import load_checkpoint
from ppo.config import TrainConfig
from ppo.factory import build_envs
from ppo.train import Trainer
from tests.dist_workers import launch, one_update, state_digest, write_folder_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES, VAL_IMAGES = 6, 3
ITERATIONS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("data") / "folder", TRAIN_IMAGES,
                                VAL_IMAGES)


def tiny(out: Path, name: str, data: Path, **kw) -> TrainConfig:
    """Two steps of four envs (two per rank), one epoch of two minibatches per iteration."""
    cfg = TrainConfig().replace(exp_name=name, out_dir=str(out), device="cpu", dataset=str(data),
                      image_size=64, obs_size=64, grid_size=16, num_envs=4, num_steps=2,
                      total_timesteps=ITERATIONS * 8, num_minibatches=2, update_epochs=1,
                      width=4, max_clicks=2, log_every=1, checkpoint_every=1,
                      keep_checkpoints=ITERATIONS, eval_every=0, eval_clicks=3,
                      tensorboard=False, progress=False, prior_steps=2, prior_width=4)
    return cfg.replace(**kw)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, data):
    """One sharded 2-rank run of ``ITERATIONS`` iterations, shared by the tests below."""
    out = tmp_path_factory.mktemp("two_rank")
    cfg = tiny(out, "straight", data, shard_data=True)
    res = launch(out, "straight", "train_and_record", cfg=cfg)
    assert res.errors == [None, None], res.errors
    assert res.exitcodes == [0, 0]
    return cfg, out / "straight", res.results


def test_ranks_hold_identical_parameters_after_every_update(two_rank_run):
    cfg, run_dir, (r0, r1) = two_rank_run
    assert len(r0["digests"]) == ITERATIONS + 1
    assert r0["digests"] == r1["digests"]
    assert len(set(r0["digests"])) == ITERATIONS + 1  # every update changed the weights
    # ...while each rank stepped its own rows (num_envs is the global batch) from its own seed.
    assert r0["local_envs"] == r1["local_envs"] == cfg.ppo.num_envs // 2
    assert not torch.equal(r0["env_state"]["key"], r1["env_state"]["key"])
    # Only rank 0 logs and holds the held-out env; one CSV row per iteration, global steps.
    assert (r0["has_eval_env"], r1["has_eval_env"]) == (True, False)
    rows = (run_dir / "progress.csv").read_text().splitlines()[1:]
    assert len(rows) == ITERATIONS
    assert int(rows[-1].split(",")[1]) == ITERATIONS * cfg.ppo.batch_size
    ck = load_checkpoint(run_dir / "last.pt")
    assert ck["counters"] == {"iteration": ITERATIONS, "global_step": ITERATIONS * cfg.ppo.batch_size,
                              "world_size": 2}
    assert state_digest(ck["model"]) == r0["digests"][-1]
    for rank, r in enumerate((r0, r1)):
        for k, v in r["env_state"].items():
            assert torch.equal(ck["ranks"][rank]["env_state"][k], v), (rank, k)


def test_shard_data_splits_training_images_between_ranks(two_rank_run, data, tmp_path):
    _, _, (r0, r1) = two_rank_run
    ids = sorted(p.stem for p in (data / "images").iterdir())[:TRAIN_IMAGES]
    assert r0["image_ids"] == ids[0::2] and r1["image_ids"] == ids[1::2]
    # Without sharding (or in one process) every rank holds the whole split.
    cfg = tiny(tmp_path, "full", data)
    assert build_envs(cfg, torch.device("cpu"), rank=1, world_size=2).train_data.ids == ids
    sharded = build_envs(cfg.replace(shard_data=True), torch.device("cpu"), rank=1,
                         world_size=2, held_out=False)
    assert sharded.train_env.num_images == TRAIN_IMAGES // 2 and sharded.eval_env is None
    with pytest.raises(ValueError, match="shard_data needs at least one training image"):
        dist_utils.shard_indices(3, rank=0, world_size=4)


def test_shard_loads_only_its_images_of_the_feature_cache(tmp_path, data):
    from gpu_env.datasets import load_dataset
    from sam_batch.cache import CacheError, encode_to_cache, load_cache
    from sam_batch.model import checkpoint_fingerprint
    from references.sam_fixtures import TINY_CONFIG, TINY_SIZE, tiny_model

    train = load_dataset(str(data), split="train", size=64)

    def image(i: int):
        return train.load_original(i)[0]

    encode_to_cache(tiny_model(), image, train.ids, tmp_path / "cache_train",
                    config_name=TINY_CONFIG, progress=False,
                    fingerprint=checkpoint_fingerprint(None, TINY_CONFIG, 0, TINY_SIZE))
    full = load_cache(tmp_path / "cache_train")
    cfg = tiny(tmp_path, "sam", data, segmenter="sam2", sam2_config=TINY_CONFIG,
               sam2_image_size=TINY_SIZE, feature_cache=str(tmp_path / "cache_{split}"),
               shard_data=True)
    env = build_envs(cfg, torch.device("cpu"), rank=1, world_size=2, held_out=False).train_env
    rows = [1, 3, 5]
    for mine, all_rows in zip(env.segmenter.features, full.features()):
        assert torch.equal(mine, all_rows[rows])
    assert env.num_images == len(rows)
    part = load_cache(tmp_path / "cache_train", indices=[4, 0])
    assert part.meta["image_ids"] == [train.ids[4], train.ids[0]] and part.num_images == 2
    with pytest.raises(CacheError, match="unique image indices in"):
        load_cache(tmp_path / "cache_train", indices=[0, TRAIN_IMAGES])


def test_two_rank_update_equals_one_rank_full_batch_update(tmp_path, data, monkeypatch):
    import ppo.train as train_mod

    cfg = tiny(tmp_path, "batch", data)
    trainer = Trainer(cfg)
    captured = {}
    real_update = train_mod.ppo_update

    def capture(loss_module, optimizer, batch, *args, **kwargs):
        captured["batch"] = batch.clone()
        captured["state"] = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        return real_update(loss_module, optimizer, batch, *args, **kwargs)

    monkeypatch.setattr(train_mod, "ppo_update", capture)
    trainer.iterate()  # a real [T, B] rollout with GAE advantages and value targets
    batch, state = captured["batch"], captured["state"]
    torch.save(batch, tmp_path / "batch.pt")

    full = one_update(cfg, state, batch)
    res = launch(tmp_path, "halves", "update_on_half", cfg=cfg, state=state,
                 batch_path=str(tmp_path / "batch.pt"))
    assert res.errors == [None, None], res.errors
    halves = res.results
    alone = one_update(cfg, state, batch[:, : cfg.ppo.num_envs // 2].clone())  # no all-reduce
    for k, v in full.items():
        assert torch.equal(halves[0][k], halves[1][k]), k
        torch.testing.assert_close(halves[0][k], v, rtol=1e-5, atol=1e-6, msg=k)
    moved = max((full[k] - state[k]).abs().max().item() for k in full)
    gap = max((alone[k] - full[k]).abs().max().item() for k in full)
    assert moved > 1e-5 and gap > 1e-5  # the update did something, and one half alone differs


def test_resume_two_rank_checkpoint_with_two_ranks_is_exact(two_rank_run):
    cfg, run_dir, (r0, _) = two_rank_run
    out = run_dir.parent
    ckpt = run_dir / f"ckpt_{ITERATIONS - 1:08d}.pt"
    resumed_cfg = cfg.replace(exp_name="resumed2", resume=str(ckpt))
    res = launch(out, "resumed2", "train_and_record", cfg=resumed_cfg)
    assert res.errors == [None, None], res.errors
    s0, s1 = res.results
    assert s0["digests"][0] == s1["digests"][0] == state_digest(load_checkpoint(ckpt)["model"])
    # Each rank got its own rows and sampler back: the continuation equals the straight run.
    assert s0["digests"] == s1["digests"] == r0["digests"][ITERATIONS - 1:]
    straight = load_checkpoint(run_dir / "last.pt")
    resumed = load_checkpoint(out / "resumed2" / "last.pt")
    for rank in range(2):
        for k, v in straight["ranks"][rank]["env_state"].items():
            assert torch.equal(resumed["ranks"][rank]["env_state"][k], v), (rank, k)


def test_resume_two_rank_checkpoint_in_one_process(two_rank_run, tmp_path):
    cfg, run_dir, _ = two_rank_run
    ckpt = run_dir / "ckpt_00000001.pt"
    saved = load_checkpoint(ckpt)
    trainer = Trainer(cfg.replace(out_dir=str(tmp_path), exp_name="resumed1", resume=str(ckpt)))
    assert trainer.local_envs == cfg.ppo.num_envs  # one process steps the whole global batch
    for k, v in saved["model"].items():
        assert torch.equal(trainer.policy.state_dict()[k], v), k
    adam = trainer.optimizer.state_dict()["state"]
    for i, s in saved["optimizer"]["state"].items():
        assert torch.equal(adam[i]["exp_avg"], s["exp_avg"])
    trainer.run()
    last = load_checkpoint(tmp_path / "resumed1" / "last.pt")
    assert last["counters"] == {"iteration": ITERATIONS, "global_step": ITERATIONS * cfg.ppo.batch_size,
                                "world_size": 1}
    assert "ranks" not in last and not any(torch.isnan(v).any() for v in last["model"].values())


def _argv(cfg: TrainConfig) -> list[str]:
    return ["--out-dir", cfg.run.out_dir, "--exp-name", cfg.run.exp_name, "--device", "cpu",
            "--dataset", cfg.data.dataset, "--image-size", "64", "--obs-size", "64",
            "--grid-size", "16", "--num-envs", "4", "--num-steps", "2",
            "--total-timesteps", str(cfg.ppo.total_timesteps), "--num-minibatches", "2",
            "--update-epochs", "1", "--width", "4", "--max-clicks", "2", "--log-every", "1",
            "--checkpoint-every", "1", "--eval-clicks", "3", "--no-tensorboard",
            "--no-progress", "--prior-steps", "2", "--prior-width", "4"]


def test_nan_on_one_rank_stops_every_rank(tmp_path, data):
    cfg = tiny(tmp_path, "nan", data)
    res = launch(tmp_path, "nan", "main_with_fault", argv=_argv(cfg), fault="nan")
    assert res.exitcodes == [1, 1], (res.exitcodes, res.errors)
    for err in res.errors:  # the flags are OR-ed over ranks, so both see rank 1's NaN
        assert err.startswith("NonFiniteError: non-finite values in rewards"), err
    assert not (tmp_path / "nan" / "last.pt").exists()  # nothing non-finite was saved


def test_exception_on_one_rank_stops_the_other_with_its_message(tmp_path, data):
    cfg = tiny(tmp_path, "boom", data)
    res = launch(tmp_path, "boom", "main_with_fault", argv=_argv(cfg), fault="raise")
    assert res.exitcodes == [1, 1], (res.exitcodes, res.errors)
    assert res.errors[1].startswith("RuntimeError: injected failure on rank 1")
    assert res.errors[0].startswith("PeerFailedError: rank 0 stopped because another process "
                                    "failed: rank 1: injected failure on rank 1"), res.errors[0]
    # Rank 0 did not wait for a collective timeout (90 s in these processes, 600 s default).
    assert res.exit_times[0] - res.exit_times[1] < 20, res.exit_times


@pytest.mark.slow
def test_torchrun_two_processes_end_to_end(tmp_path, data):
    cfg = tiny(tmp_path, "torchrun", data, shard_data=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "-m", "scripts.train", *_argv(cfg), "--shard-data"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "torchrun"
    assert len((run / "progress.csv").read_text().splitlines()) == 1 + ITERATIONS
    ck = load_checkpoint(run / "last.pt")
    assert ck["counters"]["world_size"] == 2 and len(ck["ranks"]) == 2
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results  # rank 0 evaluated and wrote the table
    assert done.stdout.count("results: ") == 1
