"""Every fast path of the env step against its slow reference, bitwise."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from gpu_env import metrics
from gpu_env import observation as O
from gpu_env.config import PROTOTYPE_ENV
from gpu_env.datasets import load_dataset
from gpu_env.env import ClickEnv
from sam_batch.geodesic import GeodesicSegmenter
from tests.reference.env_ref import reset_reference

B = 7


@pytest.fixture(scope="module")
def env():
    data = load_dataset("synthetic", split="train", size=256, count=9)
    return ClickEnv(GeodesicSegmenter(data.images), data, replace(PROTOTYPE_ENV, max_clicks=4))


def test_reset_equals_its_reference_bitwise(env):
    g = torch.Generator().manual_seed(0)
    state = env.initial_state(B, 3)
    for t in range(6):  # mid-episode states, partial resets, pool draws and given image ids
        action = torch.randint(0, env.num_actions, (B,), generator=g)
        state, _ = env.step(state, action)
        rows = torch.rand(B, generator=g) < 0.5
        ids = torch.randint(0, env.num_images, (B,), generator=g) if t % 2 else None
        fast, ref = env.reset(state, rows, ids), reset_reference(env, state, rows, ids)
        assert set(fast.keys()) == set(ref.keys())
        for k in ref.keys():
            assert fast[k].dtype == ref[k].dtype and torch.equal(fast[k], ref[k]), k
        state = fast


@pytest.mark.parametrize("size,out", [(256, 128), (256, 64), (256, 256), (96, 32), (256, 100)])
def test_resize_mask_equals_nearest_interpolation(size, out):
    g = torch.Generator().manual_seed(size + out)
    mask = torch.rand(3, size, size, generator=g) > 0.5
    ref = F.interpolate(mask[:, None].float(), size=(out, out), mode="nearest")[:, 0]
    assert torch.equal(O.resize_mask(mask, out), ref)


def test_byte_counts_equal_float_sums():
    g = torch.Generator().manual_seed(1)
    for density in (0.0, 0.1, 0.9, 1.0):
        m = torch.rand(4, 256, 256, generator=g) < density
        assert torch.equal(metrics._count(m), m.sum(dim=(1, 2), dtype=torch.float32))
        t = m.transpose(1, 2)  # a non-contiguous view counts the same
        assert torch.equal(metrics._count(t), t.sum(dim=(1, 2), dtype=torch.float32))


def test_step_metrics_equal_kornia_reference(env):
    """The env's CPU boundary engine ("bool") gives the rewards Kornia's morphology gives."""
    from gpu_env.reward import boundary_score

    g = torch.Generator().manual_seed(2)
    state = env.initial_state(B, 0)
    for _ in range(3):
        state, out = env.step(state, torch.randint(0, env.num_actions, (B,), generator=g))
        gt = env.gt[state["image_id"]]
        ref = metrics.boundary_fscore(state["mask"], gt, env.config.boundary_tolerance, "shift")
        assert torch.equal(out["boundary"], ref)
        assert torch.equal(boundary_score(state["mask"], gt, env.config), ref)


@pytest.mark.gpu
def test_cuda_engines_agree_and_env_step_never_syncs():
    """On CUDA: the byte engine equals Kornia's, and a whole env step (decode, metrics,
    reward, heatmaps, observation, reset) runs under CUDA's sync-debug "error" mode."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(5)
    m = (torch.rand(16, 256, 256, generator=g) < 0.3).cuda()
    for r in (1, 2, 3):
        assert torch.equal(metrics.dilate_disk(m, r, "bool"), metrics.dilate_disk(m, r, "shift"))
        assert torch.equal(metrics.erode_square(m, r, "bool"), metrics.erode_square(m, r, "shift"))
    data = load_dataset("synthetic", split="train", size=256, count=9)
    env = ClickEnv(GeodesicSegmenter(data.images.cuda()), data, replace(PROTOTYPE_ENV, max_clicks=2))
    state = env.initial_state(32, 0)
    actions = torch.randint(0, env.num_actions, (4, 32), generator=g).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for a in actions:
            state, out, obs = env.step_autoreset(state, a)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out["reward"]).all()


def test_row_chunks_give_the_whole_batch_result_bitwise():
    data = load_dataset("synthetic", split="train", size=256, count=9)
    seg = GeodesicSegmenter(data.images)
    cfg = replace(PROTOTYPE_ENV, max_clicks=2, obs_sam_prob=True, action_mask=True)
    whole = ClickEnv(seg, data, cfg, row_chunk=1000)
    chunked = ClickEnv(seg, data, cfg, row_chunk=16)  # 40 rows: chunks of 16, 16, 8
    g = torch.Generator().manual_seed(4)
    a, b = whole.initial_state(40, 1), chunked.initial_state(40, 1)
    for t in range(5):
        action = torch.randint(0, whole.num_actions, (40,), generator=g)
        ra, rb = whole.step_autoreset(a, action), chunked.step_autoreset(b, action)
        for x, y in zip(ra, rb):
            for k in x.keys():
                assert torch.equal(x[k], y[k]), (t, k)
        a, b = ra[0], rb[0]
        ids = torch.randint(0, 9, (40,), generator=g)
        rows = torch.rand(40, generator=g) < 0.5
        a, b = whole.reset(a, rows, image_ids=ids), chunked.reset(b, rows, image_ids=ids)
        oa, ob = whole.observe(a), chunked.observe(b)
        for k in oa.keys():
            assert torch.equal(oa[k], ob[k]), k
    with pytest.raises(ValueError, match="row_chunk=0"):
        ClickEnv(seg, data, cfg, row_chunk=0)


def test_cpu_row_chunk_default_follows_the_host_allocator(monkeypatch):
    """32-row chunks on a CPU unless the process keeps freed memory (an entry point called
    ``keep_freed_memory``), where the whole batch is one pass."""
    import gpu_env.host_allocator as host_allocator

    data = load_dataset("synthetic", split="train", size=256, count=2)
    seg = GeodesicSegmenter(data.images)
    monkeypatch.setattr(host_allocator, "_keeping", False)
    assert ClickEnv(seg, data, PROTOTYPE_ENV).row_chunk == 32
    monkeypatch.setattr(host_allocator, "_keeping", True)
    assert ClickEnv(seg, data, PROTOTYPE_ENV).row_chunk is None
    assert ClickEnv(seg, data, PROTOTYPE_ENV, row_chunk=8).row_chunk == 8
