"""Device metrics (Dice, IoU, boundary F-score, Boundary IoU) against SciPy references."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from kornia.morphology import dilation, erosion

from gpu_env import metrics
from tests.sync_guard import HostSyncError, forbid_host_sync
from references import metrics_ref

ATOL = 1e-6


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_masks(batch: int, height: int, width: int, density: float, seed: int) -> torch.Tensor:
    return torch.rand(batch, height, width, generator=_rng(seed)) < density


def _blobs(batch: int, size: int, seed: int) -> torch.Tensor:
    """Union of random discs, partly cut by the image border."""
    gen = _rng(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(batch, size, size, dtype=torch.bool)
    for b in range(batch):
        for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
            cy, cx = torch.randint(-size // 4, size + size // 4, (2,), generator=gen).tolist()
            r = int(torch.randint(1, size // 2, (1,), generator=gen))
            out[b] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


def _reference(name: str, pred: torch.Tensor, gt: torch.Tensor, *args) -> np.ndarray:
    fn = getattr(metrics_ref, name)
    return np.array([fn(p, g, *args) for p, g in zip(pred.numpy(), gt.numpy())])


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Random-noise pairs at several densities and blob pairs (prediction = perturbed GT)."""
    preds, gts = [], []
    for i, (dp, dg) in enumerate([(0.02, 0.02), (0.3, 0.6), (0.9, 0.95), (0.5, 0.5)]):
        preds.append(_random_masks(6, 30, 37, dp, seed=2 * i))
        gts.append(_random_masks(6, 30, 37, dg, seed=2 * i + 1))
    gt = _blobs(12, 37, seed=20)[:, :30]
    noise = _random_masks(12, 30, 37, 0.03, seed=21)
    preds.append(gt ^ noise)
    gts.append(gt)
    preds.append(_blobs(12, 37, seed=22)[:, :30])
    gts.append(gt)
    return torch.cat(preds), torch.cat(gts)


# ---------------------------------------------------------------- parity with SciPy


@pytest.mark.parametrize("name", ["dice", "iou"])
def test_region_metrics_match_reference(name):
    pred, gt = _pairs()
    got = getattr(metrics, name)(pred, gt)
    assert got.dtype == torch.float32 and got.shape == (len(pred),)
    np.testing.assert_allclose(got.numpy(), _reference(name, pred, gt), rtol=0, atol=ATOL)


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3, 5])
def test_boundary_fscore_matches_reference(tolerance):
    pred, gt = _pairs()
    got = metrics.boundary_fscore(pred, gt, tolerance)
    assert got.dtype == torch.float32 and got.shape == (len(pred),)
    np.testing.assert_allclose(got.numpy(), _reference("boundary_fscore", pred, gt, tolerance), rtol=0, atol=ATOL)


@pytest.mark.parametrize("tolerance", [1, 2, 3, 5])
def test_boundary_iou_matches_reference(tolerance):
    pred, gt = _pairs()
    got = metrics.boundary_iou(pred, gt, tolerance)
    assert got.dtype == torch.float32 and got.shape == (len(pred),)
    np.testing.assert_allclose(got.numpy(), _reference("boundary_iou", pred, gt, tolerance), rtol=0, atol=ATOL)


def test_boundary_is_pixels_with_a_background_neighbour_including_image_border():
    mask = _blobs(8, 25, seed=30)
    got = metrics.boundary(mask).numpy()
    for b in range(8):
        np.testing.assert_array_equal(got[b], metrics_ref.boundary(mask[b].numpy()))
    full = metrics.boundary(torch.ones(1, 6, 7, dtype=torch.bool))[0]
    ring = torch.ones(6, 7, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    assert torch.equal(full, ring)


# ---------------------------------------------------------------- edge cases (documented values)


def _edge_case_masks(size: int = 12):
    empty = torch.zeros(size, size, dtype=torch.bool)
    full = torch.ones(size, size, dtype=torch.bool)
    pixel = empty.clone()
    pixel[4, 5] = True
    pixel_next = empty.clone()
    pixel_next[4, 6] = True  # one pixel to the right
    pixel_diag = empty.clone()
    pixel_diag[5, 6] = True  # diagonal neighbour: Euclidean distance sqrt(2)
    corner = empty.clone()
    corner[0, 0] = True
    almost_full = full.clone()
    almost_full[size // 2, size // 2] = False
    return empty, full, pixel, pixel_next, pixel_diag, corner, almost_full


def test_metric_edge_cases():
    empty, full, pixel, pixel_next, pixel_diag, corner, almost_full = _edge_case_masks()
    # (pred, gt, dice, iou, fscore at tol 0, fscore at tol 1, biou at d 1)
    table = [
        (empty, empty, 1.0, 1.0, 1.0, 1.0, 1.0),  # both empty
        (empty, pixel, 0.0, 0.0, 0.0, 0.0, 0.0),  # one empty
        (full, empty, 0.0, 0.0, 0.0, 0.0, 0.0),
        (full, full, 1.0, 1.0, 1.0, 1.0, 1.0),  # full image: its border is the contour
        (pixel, pixel, 1.0, 1.0, 1.0, 1.0, 1.0),  # one-pixel object is its own boundary
        (corner, corner, 1.0, 1.0, 1.0, 1.0, 1.0),
        (pixel, pixel_next, 0.0, 0.0, 0.0, 1.0, 0.0),  # adjacent pixels: matched at tolerance 1
        (pixel, pixel_diag, 0.0, 0.0, 0.0, 0.0, 0.0),  # diagonal: sqrt(2) > 1, disk excludes it
    ]
    pred, gt = (torch.stack(c) for c in zip(*[row[:2] for row in table]))
    expected = np.array([row[2:] for row in table], dtype=np.float64)
    got = np.stack(
        [
            metrics.dice(pred, gt).numpy(),
            metrics.iou(pred, gt).numpy(),
            metrics.boundary_fscore(pred, gt, 0).numpy(),
            metrics.boundary_fscore(pred, gt, 1).numpy(),
            metrics.boundary_iou(pred, gt, 1).numpy(),
        ],
        axis=1,
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert np.isfinite(got).all()
    # the references agree on every edge case
    for col, (name, args) in enumerate(
        [("dice", ()), ("iou", ()), ("boundary_fscore", (0,)), ("boundary_fscore", (1,)), ("boundary_iou", (1,))]
    ):
        np.testing.assert_allclose(_reference(name, pred, gt, *args), expected[:, col], rtol=0, atol=ATOL)


def test_full_image_against_almost_full():
    # The hole's 8 neighbours become boundary; the image-border ring is boundary in both masks.
    _, full, *_, almost_full = _edge_case_masks(12)
    pred, gt = almost_full[None], full[None]
    ring = 4 * 12 - 4
    fscore = metrics.boundary_fscore(pred, gt, 0)
    # precision = ring / (ring + 8), recall = 1
    precision = ring / (ring + 8)
    torch.testing.assert_close(fscore, torch.tensor([2 * precision / (precision + 1)]), rtol=0, atol=ATOL)
    torch.testing.assert_close(metrics.boundary_iou(pred, gt, 1), torch.tensor([ring / (ring + 8)]), rtol=0, atol=ATOL)


def test_metrics_are_symmetric_where_they_should_be():
    pred, gt = _pairs()
    for fn in (metrics.dice, metrics.iou):
        torch.testing.assert_close(fn(pred, gt), fn(gt, pred), rtol=0, atol=0)
    torch.testing.assert_close(metrics.boundary_fscore(pred, gt, 2), metrics.boundary_fscore(gt, pred, 2))
    torch.testing.assert_close(metrics.boundary_iou(pred, gt, 2), metrics.boundary_iou(gt, pred, 2))


# ---------------------------------------------------------------- morphology choices


@pytest.mark.parametrize("engine", ["unfold", "convolution"])
def test_metrics_do_not_depend_on_kornia_engine(engine):
    pred, gt = _pairs()
    torch.testing.assert_close(
        metrics.boundary_fscore(pred, gt, 2, engine=engine), metrics.boundary_fscore(pred, gt, 2), rtol=0, atol=0
    )
    torch.testing.assert_close(
        metrics.boundary_iou(pred, gt, 2, engine=engine), metrics.boundary_iou(pred, gt, 2), rtol=0, atol=0
    )


def test_kornia_border_handling_is_the_documented_one():
    # constant 0: outside is background -> erosion eats the border, dilation adds nothing from it.
    full = torch.ones(1, 1, 5, 5)
    eroded = erosion(full, torch.ones(3, 3), border_type="constant", border_value=0.0, engine="shift")
    assert eroded[0, 0, 0].sum() == 0 and eroded[0, 0, 1:-1, 1:-1].all()
    assert torch.equal(metrics.erode(full[:, 0] > 0, metrics.square_kernel(1)), eroded[:, 0] > 0.5)
    # Kornia's default (geodesic) would instead keep the full image intact: not what we use.
    assert erosion(full, torch.ones(3, 3)).all()
    zero = torch.zeros(1, 1, 5, 5)
    assert not dilation(zero, torch.ones(3, 3), border_type="constant", border_value=0.0).any()


def test_disk_kernel():
    assert metrics.disk_kernel(0).tolist() == [[1.0]]
    assert metrics.disk_kernel(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert metrics.disk_kernel(2).sum() == 13  # |{(i, j): i^2 + j^2 <= 4}|


# ---------------------------------------------------------------- input validation


def test_metrics_reject_bad_input():
    good = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="pred must be a Bool"):
        metrics.dice(good.float(), good)
    with pytest.raises(ValueError, match="gt must be a Bool"):
        metrics.iou(good, good[0])
    with pytest.raises(ValueError, match="must match"):
        metrics.dice(good, torch.zeros(2, 8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="tolerance must be an int >= 0"):
        metrics.boundary_fscore(good, good, -1)
    with pytest.raises(ValueError, match="tolerance must be an int >= 1"):
        metrics.boundary_iou(good, good, 0)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.boundary_iou(good, good, 1.5)


# ---------------------------------------------------------------- no host sync


def test_metrics_do_not_sync(monkeypatch):
    pred, gt = _pairs()
    expected = [metrics.dice(pred, gt), metrics.iou(pred, gt), metrics.boundary_fscore(pred, gt, 2),
                metrics.boundary_iou(pred, gt, 2)]
    with forbid_host_sync():
        with pytest.raises(HostSyncError):
            bool(torch.ones(1))  # the patch is live
        got = [metrics.dice(pred, gt), metrics.iou(pred, gt), metrics.boundary_fscore(pred, gt, 2),
               metrics.boundary_iou(pred, gt, 2)]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.gpu
def test_metrics_on_cuda_match_cpu_without_sync():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pred, gt = _pairs()
    expected = [metrics.dice(pred, gt), metrics.iou(pred, gt), metrics.boundary_fscore(pred, gt, 2),
                metrics.boundary_iou(pred, gt, 2)]
    pred, gt = pred.cuda(), gt.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = [metrics.dice(pred, gt), metrics.iou(pred, gt), metrics.boundary_fscore(pred, gt, 2),
               metrics.boundary_iou(pred, gt, 2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0)


def test_precomputed_gt_terms_give_identical_scores():
    from gpu_env.metrics import boundary, boundary_fscore, boundary_iou, fscore_gt_terms

    g = torch.Generator().manual_seed(3)
    pred = torch.rand(5, 40, 40, generator=g) > 0.6
    gt = torch.rand(5, 40, 40, generator=g) > 0.4
    for tol in (1, 2, 3):
        assert torch.equal(boundary_fscore(pred, gt, tol),
                           boundary_fscore(pred, gt, tol, gt_terms=fscore_gt_terms(gt, tol)))
        assert torch.equal(boundary_iou(pred, gt, tol),
                           boundary_iou(pred, gt, tol, gt_band=boundary(gt, tol)))


@pytest.mark.parametrize("engine", ["pool", "bool"])
@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 6])
def test_fast_engines_equal_kornia(radius, engine):
    g = torch.Generator().manual_seed(radius)
    for density in (0.0, 0.02, 0.3, 0.7, 1.0):
        for shape in ((3, 37, 41), (2, 5, 3), (1, 1, 9)):
            m = torch.rand(*shape, generator=g) < density
            m[0, 0, :] = True  # touch the border
            assert torch.equal(metrics.dilate_disk(m, radius, engine),
                               metrics.dilate_disk(m, radius, "shift"))
            if radius >= 1:
                assert torch.equal(metrics.erode_square(m, radius, engine),
                                   metrics.erode_square(m, radius, "shift"))
    pred = torch.rand(4, 40, 40, generator=g) > 0.5
    gt = torch.rand(4, 40, 40, generator=g) > 0.5
    assert torch.equal(metrics.boundary_fscore(pred, gt, radius, engine),
                       metrics.boundary_fscore(pred, gt, radius, "shift"))
    if radius >= 1:
        assert torch.equal(metrics.boundary_iou(pred, gt, radius, engine),
                           metrics.boundary_iou(pred, gt, radius, "shift"))
