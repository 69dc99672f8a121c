"""``keep_freed_memory`` changes where host memory comes from, never a result: a short training
run gives bit-identical weights with and without it (each in its own process, since the setting
is process-wide; with it the env steps its 40 rows in one pass, without it in 32-row chunks), and
it does remove the page faults it is there to remove."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train import tiny

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
from gpu_env.host_allocator import keep_freed_memory, keeps_freed_memory
keep = sys.argv[2] == "1"
on = keep_freed_memory() if keep else False
assert keeps_freed_memory() is on
import torch
torch.set_num_threads(1)
from ppo.config import TrainConfig
from ppo.train import Trainer
t = Trainer(TrainConfig.from_dict(json.loads(sys.argv[1])))
assert t.env.row_chunk == (None if on else 32), t.env.row_chunk
t.iterate()  # warm-up: the heap reaches its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t.run()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
torch.save(t.policy.state_dict(), sys.argv[3])
print(json.dumps({"on": on, "faults": faults}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt (Linux) only")
def test_training_is_bit_identical_with_freed_memory_kept(tmp_path):
    out = {}
    for keep in ("0", "1"):
        cfg = tiny(tmp_path, f"alloc{keep}", width=8, num_envs=40, num_steps=4,
                   total_timesteps=40 * 4 * 3, obs_size=128, train_images=16)
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg.to_dict()), keep,
                               str(tmp_path / f"w{keep}.pt")], check=True, cwd=ROOT,
                              capture_output=True, text=True)
        out[keep] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["1"]["on"] is True and out["0"]["on"] is False
    a, b = torch.load(tmp_path / "w0.pt"), torch.load(tmp_path / "w1.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # without it the same iterations fault their buffers in again; with it almost nothing does
    assert out["1"]["faults"] * 10 < out["0"]["faults"], out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt (Linux) only")
def test_freed_memory_kept_for_a_block_then_glibc_defaults_again():
    """The commands keep freed memory for their repeated work only (after building the run):
    inside the block the env steps a CPU batch whole, after it in 32-row chunks again."""
    from gpu_env.datasets import load_dataset
    from gpu_env.env import ClickEnv
    from gpu_env.host_allocator import freed_memory_kept, keeps_freed_memory
    from sam_batch.geodesic import GeodesicSegmenter

    data = load_dataset("synthetic", split="train", size=256, count=2)
    env = ClickEnv(GeodesicSegmenter(data.images), data)  # built before the block, as train does
    with freed_memory_kept() as on:
        assert on is True and keeps_freed_memory()
        assert env.row_chunk is None
    assert not keeps_freed_memory()
    assert env.row_chunk == 32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt (Linux) only")
def test_a_nested_block_leaves_the_enclosing_choice_in_place():
    """A block inside a process that already keeps freed memory (an enclosing block, or an entry
    point's keep_freed_memory()) must not hand the memory back when it ends."""
    from gpu_env.host_allocator import freed_memory_kept, keeps_freed_memory

    with freed_memory_kept() as outer:
        assert outer is True
        with freed_memory_kept() as inner:
            assert inner is True and keeps_freed_memory()
        assert keeps_freed_memory()
    assert not keeps_freed_memory()
