"""The weight-free geodesic segmenter: interface, exactness of its parts, quality under a
SciPy port of RITM's oracle clicker, padding invariance and the no-host-sync rule."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from gpu_env.datasets import SegDataset, load_dataset
from sam_batch.geodesic import (
    GeodesicConfig,
    GeodesicSegmenter,
    bilinear_matrix,
    geodesic_distance,
)
from sam_batch.segmenter import DecodeOutput, Segmenter

INPUT = 1024

# ----------------------------------------------------------------------------- oracle (SciPy)


def _edt(region: np.ndarray) -> np.ndarray:
    """Distance to the nearest pixel outside ``region``, the image frame counting as outside."""
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def first_click(gt: np.ndarray) -> tuple[int, int]:
    """The GT pixel farthest from the boundary (first row-major argmax)."""
    return divmod(int(np.argmax(_edt(gt))), gt.shape[1])


def next_click(gt: np.ndarray, pred: np.ndarray, clicked: list[tuple[int, int]]) -> tuple[tuple[int, int], bool]:
    """RITM: centre of the larger error region; strictly larger false negative -> positive."""
    fn, fp = _edt(gt & ~pred), _edt(~gt & pred)
    for r, c in clicked:
        fn[r, c] = fp[r, c] = 0
    if fn.max() > fp.max():
        return divmod(int(np.argmax(fn)), gt.shape[1]), True
    return divmod(int(np.argmax(fp)), gt.shape[1]), False


def to_point(r: int, c: int, size: int) -> list[float]:
    return [(c + 0.5) * INPUT / size - 0.5, (r + 0.5) * INPUT / size - 0.5]


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return 2.0 * (pred & gt).sum() / max(1, pred.sum() + gt.sum())


def oracle_dice_table(seg: GeodesicSegmenter, ds: SegDataset, clicks: int) -> np.ndarray:
    """``[clicks]`` mean Dice after 1..clicks oracle clicks, all frames decoded as one batch."""
    gts, S, B = ds.masks.cpu().numpy(), ds.size, len(ds)
    points = torch.zeros(B, clicks, 2)
    labels = torch.full((B, clicks), -1)
    clicked: list[list[tuple[int, int]]] = [[] for _ in range(B)]
    table, preds = [], None
    for k in range(clicks):
        for b in range(B):
            if k == 0:
                (r, c), positive = first_click(gts[b]), True
            else:
                (r, c), positive = next_click(gts[b], preds[b], clicked[b])
            clicked[b].append((r, c))
            points[b, k] = torch.tensor(to_point(r, c, S))
            labels[b, k] = int(positive)
        out = seg.decode(torch.arange(B), points, labels)
        preds = (out.logits[:, 0] > 0).cpu().numpy()
        table.append(np.mean([dice(preds[b], gts[b]) for b in range(B)]))
    return np.array(table)


@pytest.fixture(scope="module")
def val_set() -> SegDataset:
    return load_dataset("synthetic", split="val", size=256, count=64, seed=0)


@pytest.fixture(scope="module")
def seg(val_set) -> GeodesicSegmenter:
    return GeodesicSegmenter(val_set.images)


# ----------------------------------------------------------------------------- interface


def test_implements_segmenter_protocol(seg, val_set):
    assert isinstance(seg, Segmenter)
    assert (seg.input_size, seg.mask_size, seg.num_images) == (1024, 256, 64)
    assert seg.device == torch.device("cpu") and seg.image_embedding(torch.arange(2)) is None
    ids = torch.tensor([0, 5, 5])
    points = torch.tensor([[[500.0, 500.0]], [[100.0, 900.0]], [[1023.0, 0.0]]])
    out = seg.decode(ids, points, torch.ones(3, 1, dtype=torch.long))
    assert isinstance(out, DecodeOutput)
    assert out.logits.shape == (3, 1, 256, 256) and out.logits.dtype == torch.float32
    assert out.score.shape == (3,) and bool(((out.score >= 0) & (out.score <= 1)).all())


def test_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        GeodesicSegmenter(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="square"):
        GeodesicSegmenter(torch.zeros(2, 3, 64, 32, dtype=torch.uint8))


def _dijkstra(wx: np.ndarray, wy: np.ndarray, seeds: dict[tuple[int, int], float]) -> np.ndarray:
    """Reference 4-connected geodesic distance; ``wx[r, c]`` = cost between (r, c) and (r, c+1)."""
    R = wy.shape[1]
    dist = np.full((R, R), np.inf)
    heap = []
    for (r, c), v in seeds.items():
        dist[r, c] = v
        heap.append((v, r, c))
    heapq.heapify(heap)
    while heap:
        v, r, c = heapq.heappop(heap)
        if v > dist[r, c]:
            continue
        for rr, cc, w in ((r, c + 1, wx[r, c] if c + 1 < R else 0), (r, c - 1, wx[r, c - 1] if c > 0 else 0),
                          (r + 1, c, wy[r, c] if r + 1 < R else 0), (r - 1, c, wy[r - 1, c] if r > 0 else 0)):
            if 0 <= rr < R and 0 <= cc < R and v + w < dist[rr, cc]:
                dist[rr, cc] = v + w
                heapq.heappush(heap, (v + w, rr, cc))
    return dist


@pytest.mark.parametrize("kind,sweeps,tol", [("maze", 12, 1e-3), ("smooth", 2, 0.02)])
def test_geodesic_distance_matches_dijkstra(kind, sweeps, tol):
    R = 24
    g = torch.Generator().manual_seed(1)
    if kind == "maze":  # random costs: optimal paths turn often, so more rounds are needed
        wx, wy = torch.rand(R, R - 1, generator=g) * 3 + 0.1, torch.rand(R - 1, R, generator=g) * 3 + 0.1
    else:  # image-like: smooth costs with one ridge, the regime the segmenter runs in
        y, x = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
        field = 0.2 + 3.0 * torch.exp(-((x - 0.6 * y - 6.0) ** 2) / 4.0)
        wx, wy = 0.5 * (field[:, 1:] + field[:, :-1]), 0.5 * (field[1:] + field[:-1])
    sx = F.pad(wx, (1, 0)).cumsum(-1)
    syt = F.pad(wy.T, (1, 0)).cumsum(-1)
    seeds = {(3, 5): 0.0, (20, 17): 0.5, (12, 2): 2.0}
    start = torch.full((1, 1, R, R), 1e4)
    for (r, c), v in seeds.items():
        start[0, 0, r, c] = v
    ours = geodesic_distance(start, sx, syt, sweeps)[0, 0].numpy()
    ref = _dijkstra(wx.numpy(), wy.numpy(), seeds)
    assert np.abs(ours - ref).max() <= tol * ref.max()
    assert (ours >= ref - 1e-4).all()  # sweeps can only over-estimate


def test_bilinear_matrix_is_bilinear_interpolation():
    x = torch.randn(3, 64, 64)
    u = bilinear_matrix(64, 256)
    ref = F.interpolate(x[:, None], size=(256, 256), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(u @ x @ u.T, ref, atol=1e-5)


# ----------------------------------------------------------------------------- quality


def test_dice_rises_with_oracle_clicks(seg, val_set):
    table = oracle_dice_table(seg, val_set, clicks=6)
    assert (np.diff(table) > 0).all(), table  # every click helps on average
    assert table[0] > 0.5, table  # a lone positive click already finds most polyps
    assert table[4] >= 0.85, table  # five clicks (1 initial + 4)
    assert table[5] >= 0.86, table


def test_a_bad_click_hurts(seg, val_set):
    gts, S, B = val_set.masks.numpy(), val_set.size, len(val_set)
    points = torch.zeros(B, 2, 2)
    labels = torch.tensor([[1, 1]]).repeat(B, 1)
    for b in range(B):
        points[b, 0] = torch.tensor(to_point(*first_click(gts[b]), S))
        r, c = divmod(int(np.argmax(_edt(~gts[b]))), S)  # deepest background pixel, clicked "positive"
        points[b, 1] = torch.tensor(to_point(r, c, S))
    one = seg.decode(torch.arange(B), points[:, :1], labels[:, :1]).logits[:, 0] > 0
    bad = seg.decode(torch.arange(B), points, labels).logits[:, 0] > 0
    d_one = np.mean([dice(one[b].numpy(), gts[b]) for b in range(B)])
    d_bad = np.mean([dice(bad[b].numpy(), gts[b]) for b in range(B)])
    assert d_bad < d_one - 0.1, (d_one, d_bad)
    # The bad click turned its own neighbourhood foreground.
    fp_area = ((bad & ~torch.from_numpy(gts)).flatten(1).float().mean(1) - (one & ~torch.from_numpy(gts)).flatten(1).float().mean(1))
    assert (fp_area > 0).float().mean() > 0.9


def test_lone_positive_click_gives_a_bounded_mask(seg, val_set):
    gts, S, B = val_set.masks.numpy(), val_set.size, len(val_set)
    points = torch.tensor([[to_point(*first_click(gts[b]), S)] for b in range(B)])
    out = seg.decode(torch.arange(B), points, torch.ones(B, 1, dtype=torch.long))
    mask = out.logits[:, 0] > 0
    area = mask.flatten(1).float().mean(1)
    assert (area > 0).all() and area.median() < 0.2 and area.max() < 0.6
    rc = [first_click(gts[b]) for b in range(B)]
    assert all(bool(mask[b, r, c]) for b, (r, c) in enumerate(rc))  # the click is foreground


# ----------------------------------------------------------------------------- batching rules


def _random_clicks(B: int, K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(B, K, 2, generator=g) * INPUT
    labels = torch.randint(0, 2, (B, K), generator=g)
    labels[:, 0] = 1
    counts = torch.randint(1, K + 1, (B,), generator=g)
    labels[torch.arange(K)[None] >= counts[:, None]] = -1
    points[labels == -1] = torch.tensor([float("nan"), 5e6])  # junk in padding slots
    return points, labels, counts


def test_batched_equals_one_at_a_time(seg):
    points, labels, counts = _random_clicks(B=20, K=6, seed=3)
    ids = torch.randint(0, seg.num_images, (20,), generator=torch.Generator().manual_seed(4))
    batched = seg.decode(ids, points, labels)
    for b in range(20):
        k = int(counts[b])
        alone = seg.decode(ids[b:b + 1], points[b:b + 1, :k], labels[b:b + 1, :k])
        assert torch.allclose(batched.logits[b], alone.logits[0], atol=1e-4)
        assert torch.allclose(batched.score[b], alone.score[0], atol=1e-5)


def test_mask_input_and_multimask_are_ignored(seg):
    points, labels, _ = _random_clicks(B=4, K=3, seed=5)
    ids = torch.arange(4)
    plain = seg.decode(ids, points, labels)
    other = seg.decode(ids, points, labels, mask_input=torch.randn(4, 1, 256, 256),
                       has_mask_input=torch.ones(4, dtype=torch.bool), multimask=True)
    assert torch.equal(plain.logits, other.logits)


def test_decode_never_syncs_with_the_host(seg, monkeypatch):
    points, labels, _ = _random_clicks(B=20, K=6, seed=6)  # > cpu_chunk: the chunked path too
    ids = torch.arange(20)
    seg.decode(ids, points, labels)  # warm-up outside the trap

    def trap(*args, **kwargs):
        raise AssertionError("host synchronisation in decode")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, trap)
    out = seg.decode(ids, points, labels)
    monkeypatch.undo()
    assert out.logits.shape == (20, 1, 256, 256)


def test_results_do_not_depend_on_cpu_chunking(val_set):
    points, labels, _ = _random_clicks(B=10, K=4, seed=7)
    ids = torch.arange(10)
    a = GeodesicSegmenter(val_set.images[:10], GeodesicConfig(cpu_chunk=3)).decode(ids, points, labels)
    b = GeodesicSegmenter(val_set.images[:10], GeodesicConfig(cpu_chunk=64)).decode(ids, points, labels)
    assert torch.allclose(a.logits, b.logits, atol=1e-4)


def test_autocast_leaves_decode_in_fp32(seg):
    """A run's ``--autocast bf16`` used to crash the decode (its ``out=`` upsampling got a bf16
    product); it now decodes in fp32 inside autocast, bitwise as without it."""
    points, labels, _ = _random_clicks(B=10, K=4, seed=9)
    ids = torch.arange(10)
    plain = seg.decode(ids, points, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = seg.decode(ids, points, labels)
    assert mixed.logits.dtype == torch.float32
    assert torch.equal(plain.logits, mixed.logits) and torch.equal(plain.score, mixed.score)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(seg, val_set):
    points, labels, _ = _random_clicks(B=16, K=6, seed=8)
    ids = torch.arange(16)
    cpu = seg.decode(ids, points, labels)
    gpu = GeodesicSegmenter(val_set.images.cuda()).decode(ids.cuda(), points.cuda(), labels.cuda())
    assert ((gpu.logits.cpu() > 0) != (cpu.logits > 0)).float().mean() < 1e-3


@pytest.mark.slow
def test_dice_table_on_200_val_frames():
    """The numbers quoted in the report: ``pytest -m slow -s`` prints them."""
    ds = load_dataset("synthetic", split="val", size=256, count=200, seed=0)
    table = oracle_dice_table(GeodesicSegmenter(ds.images), ds, clicks=6)
    print("\nmean Dice after 1..6 oracle clicks (200 synthetic val frames):",
          " ".join(f"{x:.3f}" for x in table))
    assert (np.diff(table) > 0).all() and table[4] >= 0.85


def test_channel_norm_equals_torch_norm_over_channels():
    from sam_batch.geodesic import _channel_norm

    x = torch.randn(7, 4, 33, 17, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_channel_norm(x), x.norm(dim=1))
    assert torch.equal(_channel_norm(x.flatten(2)), x.flatten(2).norm(dim=1))
