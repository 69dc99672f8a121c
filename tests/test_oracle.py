"""Batched EDT and RITM oracle against SciPy and a NumPy port of RITM's clicker."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from gpu_env.edt import edt, squared_edt
from gpu_env.oracle import OracleClick, click_to_action, error_distances, first_click, pixel_to_cell, ritm_click
from tests.sync_guard import HostSyncError, forbid_host_sync
from references.ritm_clicker import Click, Clicker, error_distance_maps, next_click

# ---------------------------------------------------------------- helpers


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_masks(batch: int, height: int, width: int, density: float, seed: int) -> torch.Tensor:
    return torch.rand(batch, height, width, generator=_rng(seed)) < density


def _blobs(batch: int, size: int, seed: int, max_blobs: int = 3) -> torch.Tensor:
    """Union of random discs: polyp-like masks whose errors have thick, tie-prone interiors."""
    gen = _rng(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(batch, size, size, dtype=torch.bool)
    for b in range(batch):
        n = int(torch.randint(1, max_blobs + 1, (1,), generator=gen))
        for _ in range(n):
            cy, cx = torch.randint(-size // 4, size + size // 4, (2,), generator=gen).tolist()
            r = int(torch.randint(1, size // 2, (1,), generator=gen))
            out[b] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


def _scipy_edt(mask: torch.Tensor) -> np.ndarray:
    return np.stack([distance_transform_edt(m) for m in mask.numpy()])


def _reference_clicks(pred, gt, not_clicked=None):
    rows = [
        next_click(p, g, None if not_clicked is None else n)
        for p, g, n in zip(
            pred.numpy(), gt.numpy(), not_clicked.numpy() if not_clicked is not None else [None] * len(pred)
        )
    ]
    r, c, pos, dist = zip(*rows)
    return np.array(r), np.array(c), np.array(pos), np.array(dist) > 0


def _assert_same_clicks(pred, gt, not_clicked=None):
    got = ritm_click(pred, gt, not_clicked)
    r, c, pos, err = _reference_clicks(pred, gt, not_clicked)
    assert got.rows.dtype == torch.long and got.cols.dtype == torch.long
    assert got.positive.dtype == torch.bool and got.has_error.dtype == torch.bool
    np.testing.assert_array_equal(got.rows.numpy(), r)
    np.testing.assert_array_equal(got.cols.numpy(), c)
    np.testing.assert_array_equal(got.positive.numpy(), pos)
    np.testing.assert_array_equal(got.has_error.numpy(), err)
    return got


# ---------------------------------------------------------------- edt


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.7, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (17, 23), (64, 64)])
def test_edt_matches_scipy_on_random_masks(density, shape):
    mask = _random_masks(12, *shape, density, seed=int(density * 1000) + shape[0])
    ref = _scipy_edt(mask)
    np.testing.assert_array_equal(edt(mask).numpy(), ref.astype(np.float32))
    np.testing.assert_array_equal(squared_edt(mask).numpy(), np.rint(ref**2).astype(np.float32))


def _adversarial_masks(height: int, width: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    cases = [
        torch.zeros(height, width, dtype=torch.bool),
        torch.ones(height, width, dtype=torch.bool),
        (yy == height // 2) & (xx == width // 3),  # single True pixel
        ~((yy == height // 2) & (xx == width // 3)),  # single False pixel
        ~((yy == height - 1) & (xx == width - 1)),  # single False pixel in a corner
        ~((yy == 0) & (xx == 0)),
        yy % 2 == 0,  # horizontal stripes
        xx % 3 != 0,  # vertical stripes
        (yy + xx) % 2 == 0,  # checkerboard
        (yy + xx) % 7 != 0,  # diagonals
        (yy == 0) | (yy == height - 1) | (xx == 0) | (xx == width - 1),  # border ring only
        (yy > 0) & (yy < height - 1) & (xx > 0) & (xx < width - 1),  # interior only
        xx < width // 2,  # half plane: many columns with no zero
        yy >= 1,  # only the first row is background
    ]
    return torch.stack(cases)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (5, 8), (31, 17), (40, 40)])
def test_edt_matches_scipy_on_adversarial_masks(shape):
    mask = _adversarial_masks(*shape)
    np.testing.assert_array_equal(edt(mask).numpy(), _scipy_edt(mask).astype(np.float32))


def test_edt_all_true_is_scipys_finite_value():
    # SciPy measures an image without background to a virtual zero at (-1, 0); edt documents that.
    got = squared_edt(torch.ones(2, 4, 5, dtype=torch.bool))
    yy, xx = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    torch.testing.assert_close(got, ((yy + 1) ** 2 + xx**2).expand(2, 4, 5), rtol=0, atol=0)
    assert torch.isfinite(got).all()


def test_edt_result_does_not_depend_on_chunk():
    mask = _random_masks(5, 23, 19, 0.8, seed=3)
    base = squared_edt(mask)
    for chunk in (1, 7, 23, 1000):
        torch.testing.assert_close(squared_edt(mask, chunk=chunk), base, rtol=0, atol=0)


def test_edt_empty_batch():
    assert edt(torch.zeros(0, 6, 7, dtype=torch.bool)).shape == (0, 6, 7)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(4, 4), "Bool"),
        (torch.zeros(4, 4, dtype=torch.bool), "Bool"),
        (torch.zeros(1, 0, 4, dtype=torch.bool), "H, W >= 1"),
        (torch.zeros(1, 3000, 3000, dtype=torch.bool), "2\\*\\*24"),
    ],
)
def test_edt_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        edt(bad)


def test_edt_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk"):
        edt(torch.ones(1, 3, 3, dtype=torch.bool), chunk=0)


# ---------------------------------------------------------------- oracle vs RITM


@pytest.mark.parametrize("pred_density, gt_density", [(0.0, 0.5), (0.5, 0.5), (0.1, 0.9), (0.97, 0.99), (0.5, 0.0)])
def test_oracle_matches_ritm_on_random_masks(pred_density, gt_density):
    seed = int(pred_density * 100 + gt_density * 10)
    pred = _random_masks(24, 20, 27, pred_density, seed=seed)
    gt = _random_masks(24, 20, 27, gt_density, seed=seed + 1)
    _assert_same_clicks(pred, gt)


def test_oracle_matches_ritm_on_blob_masks():
    gt = _blobs(32, 48, seed=0)
    pred = _blobs(32, 48, seed=1) | (gt & _random_masks(32, 48, 48, 0.8, seed=2))
    got = _assert_same_clicks(pred, gt)
    assert got.has_error.all()
    assert got.positive.any() and (~got.positive).any()  # both branches exercised


def test_oracle_matches_ritm_with_clicked_pixels_excluded():
    gt = _blobs(16, 32, seed=4)
    pred = _blobs(16, 32, seed=5)
    not_clicked = _random_masks(16, 32, 32, 0.7, seed=6)
    _assert_same_clicks(pred, gt, not_clicked)
    # Clicking exactly where the oracle would click moves the click elsewhere.
    first = ritm_click(pred, gt)
    mask = torch.ones_like(gt)
    mask[torch.arange(16), first.rows, first.cols] = False
    second = _assert_same_clicks(pred, gt, mask)
    moved = (second.rows != first.rows) | (second.cols != first.cols)
    assert moved[first.has_error].all()


def _square(mask: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    mask[top : top + size, left : left + size] = True
    return mask


def _adversarial_pairs(size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pred, gt, not_clicked) cases where the rule's corners matter."""
    cases = []
    empty = torch.zeros(size, size, dtype=torch.bool)
    full = torch.ones(size, size, dtype=torch.bool)
    all_free = full.clone()
    some = _square(empty.clone(), 3, 4, 6)
    # no error: identical masks, empty, full
    cases += [(some, some, all_free), (empty, empty, all_free), (full, full, all_free)]
    # tie between fn and fp maxima (4x4 and 3x3 squares both peak at 2): RITM picks negative
    gt = _square(empty.clone(), 2, 2, 4)
    cases.append((_square(empty.clone(), 9, 9, 3), gt, all_free))
    # fn strictly larger -> positive; fp strictly larger -> negative
    cases.append((_square(empty.clone(), 9, 9, 2), gt, all_free))
    cases.append((_square(empty.clone(), 9, 9, 6), gt, all_free))
    # several equal maxima in one map: row-major first wins
    twin = _square(_square(empty.clone(), 6, 10, 3), 6, 1, 3)
    cases.append((empty, twin, all_free))
    twin_rows = _square(_square(empty.clone(), 10, 1, 3), 2, 10, 3)
    cases.append((empty, twin_rows, all_free))
    # one-pixel regions: fn pixel vs fp pixel (tie -> negative), lone fn pixel
    px_gt = empty.clone()
    px_gt[5, 7] = True
    px_pred = empty.clone()
    px_pred[11, 2] = True
    cases += [(px_pred, px_gt, all_free), (empty, px_gt, all_free), (px_pred, empty, all_free)]
    # errors touching the image border: the border counts as background after padding
    edge = empty.clone()
    edge[0, :] = True
    edge[:, -1] = True
    cases += [(empty, edge, all_free), (edge, empty, all_free), (empty, full, all_free), (full, empty, all_free)]
    # clicked pixels excluded: the maximum pixel clicked, all error pixels clicked, everything clicked
    center_clicked = all_free.clone()
    center_clicked[5, 6] = False
    cases.append((empty, _square(empty.clone(), 3, 4, 6), center_clicked))
    cases.append((empty, px_gt, ~px_gt))
    cases.append((px_pred, px_gt, torch.zeros_like(full)))
    pred, gt, not_clicked = (torch.stack(c) for c in zip(*cases))
    return pred, gt, not_clicked


def test_oracle_matches_ritm_on_adversarial_cases():
    pred, gt, not_clicked = _adversarial_pairs()
    got = _assert_same_clicks(pred, gt, not_clicked)
    # a few cases pinned by hand so the reference itself is checked
    assert not got.has_error[0] and not got.positive[0] and got.rows[0] == 0 and got.cols[0] == 0
    assert got.has_error[3] and not got.positive[3]  # fn/fp tie -> negative
    assert got.positive[4] and not got.positive[5]
    assert (got.rows[6], got.cols[6]) == (7, 2)  # two equal squares on one row: the left one
    assert (got.rows[7], got.cols[7]) == (3, 11)  # the upper square, although it is to the right
    assert not got.has_error[-1]  # every pixel clicked: no click left to place


def test_oracle_error_maps_match_ritm():
    pred = _blobs(6, 24, seed=7)
    gt = _blobs(6, 24, seed=8)
    not_clicked = _random_masks(6, 24, 24, 0.9, seed=9)
    fn_sq, fp_sq = error_distances(pred, gt, not_clicked)
    for b in range(6):
        fn_ref, fp_ref = error_distance_maps(pred[b].numpy(), gt[b].numpy(), not_clicked[b].numpy())
        np.testing.assert_array_equal(fn_sq[b].numpy(), np.rint(fn_ref**2))
        np.testing.assert_array_equal(fp_sq[b].numpy(), np.rint(fp_ref**2))


def _apply_click(pred: np.ndarray, click: Click, radius: int = 3) -> np.ndarray:
    """A toy segmenter: paint (positive) or erase (negative) a disc around the click."""
    yy, xx = np.mgrid[: pred.shape[0], : pred.shape[1]]
    disc = (yy - click.coords[0]) ** 2 + (xx - click.coords[1]) ** 2 <= radius**2
    return pred | disc if click.is_positive else pred & ~disc


def test_oracle_episode_matches_ritm_clicker_sequence():
    batch, size, n_clicks = 12, 32, 8
    gt = _blobs(batch, size, seed=10)
    # RITM: one Clicker per image, its own not_clicked_map, make_next_click after each prediction
    clickers = [Clicker(gt_mask=g.numpy().astype(np.int64)) for g in gt]
    preds_ref = [np.zeros((size, size), dtype=bool) for _ in range(batch)]
    # batched: one not_clicked tensor, masked updates
    pred = torch.zeros(batch, size, size, dtype=torch.bool)
    not_clicked = torch.ones_like(pred)
    arange = torch.arange(batch)
    for step in range(n_clicks):
        click = first_click(gt, not_clicked) if step == 0 else ritm_click(pred, gt, not_clicked)
        for b, clicker in enumerate(clickers):
            clicker.make_next_click(preds_ref[b])
            ref = clicker.get_clicks()[-1]
            assert (click.rows[b].item(), click.cols[b].item()) == ref.coords, (step, b)
            assert click.positive[b].item() == ref.is_positive, (step, b)
            preds_ref[b] = _apply_click(preds_ref[b], ref)
        not_clicked[arange, click.rows, click.cols] = False
        pred = torch.from_numpy(np.stack(preds_ref))
    for b, clicker in enumerate(clickers):
        np.testing.assert_array_equal(not_clicked[b].numpy(), clicker.not_clicked_map)


def test_first_click_is_deepest_gt_pixel():
    gt = _blobs(10, 40, seed=11)
    gt[0] = False  # empty GT
    click = first_click(gt)
    for b in range(1, 10):
        depth = distance_transform_edt(np.pad(gt[b].numpy(), 1))[1:-1, 1:-1]
        expected = np.unravel_index(np.argmax(depth), depth.shape)  # numpy argmax: first maximum
        assert (click.rows[b].item(), click.cols[b].item()) == expected
    assert click.positive[1:].all() and click.has_error[1:].all()
    assert (click.rows[0], click.cols[0], click.positive[0], click.has_error[0]) == (0, 0, False, False)


def test_first_click_is_the_oracle_on_an_empty_prediction():
    gt = _blobs(12, 33, seed=5)
    gt[0] = False
    gt[1] = True
    not_clicked = torch.rand(12, 33, 33, generator=torch.Generator().manual_seed(2)) > 0.1
    not_clicked[2] = False  # every pixel clicked: no error left
    for nc in (None, not_clicked):
        got, ref = first_click(gt, nc), ritm_click(torch.zeros_like(gt), gt, nc)
        for name in OracleClick._fields:
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(3, 1, 1), (4, 1, 7), (5, 9, 1), (6, 40, 37)])
def test_cpu_running_min_max_equal_cummax_cummin(shape):
    from gpu_env.edt import running_max, running_min_from_below

    values = torch.randint(-50, 50, shape, generator=torch.Generator().manual_seed(shape[1]), dtype=torch.int32)
    torch.testing.assert_close(running_max(values), values.cummax(dim=1).values, rtol=0, atol=0)
    torch.testing.assert_close(running_min_from_below(values),
                               values.flip(1).cummin(dim=1).values.flip(1), rtol=0, atol=0)
    empty = values[:, :0]
    assert running_max(empty).shape == empty.shape == running_min_from_below(empty).shape


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (33, 33), (40, 29)])
def test_first_click_in_boxes_equals_first_click(size):
    from gpu_env.oracle import first_click_in_boxes

    h, w = size
    gen = torch.Generator().manual_seed(h * 100 + w)
    cases = [torch.rand(37, h, w, generator=gen) > q for q in (0.3, 0.9, 0.99)]
    cases.append(_adversarial_masks(h, w))
    if h == w and h > 8:
        cases.append(_blobs(45, h, seed=h))
    for gt in cases:
        got, ref = first_click_in_boxes(gt, group=5), first_click(gt)
        for name in OracleClick._fields:
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=0, atol=0)
    empty = torch.zeros(0, h, w, dtype=torch.bool)
    assert first_click_in_boxes(empty).rows.shape == (0,)


def test_oracle_rejects_bad_input():
    good = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="pred must be a Bool"):
        ritm_click(good.float(), good)
    with pytest.raises(ValueError, match="not_clicked has shape"):
        ritm_click(good, good, torch.ones(2, 8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="gt must be a Bool"):
        first_click(good[0])


# ---------------------------------------------------------------- action grid


def test_pixel_to_cell_and_action():
    rows = torch.tensor([0, 7, 8, 255, 100])
    cols = torch.tensor([0, 7, 15, 255, 3])
    assert pixel_to_cell(rows, cols, 256, 256, 32).tolist() == [0, 0, 32 + 1, 1023, 12 * 32 + 0]
    assert pixel_to_cell(torch.tensor([5]), torch.tensor([9]), 10, 20, 4).tolist() == [2 * 4 + 1]
    click = OracleClick(rows[:2], cols[:2], torch.tensor([True, False]), torch.tensor([True, True]))
    assert click_to_action(click, 256, 256, 32).tolist() == [0, 1024]
    with pytest.raises(ValueError, match="grid_size"):
        pixel_to_cell(rows, cols, 256, 256, 0)


# ---------------------------------------------------------------- no host sync


def test_edt_and_oracle_do_not_sync(monkeypatch):
    pred = _blobs(4, 24, seed=12)
    gt = _blobs(4, 24, seed=13)
    not_clicked = _random_masks(4, 24, 24, 0.9, seed=14)
    expected = ritm_click(pred, gt, not_clicked)
    with forbid_host_sync():
        with pytest.raises(HostSyncError):
            torch.ones(1).item()  # the patch is live
        distances = edt(gt)
        got = ritm_click(pred, gt, not_clicked)
        first = first_click(gt)
        action = click_to_action(got, 24, 24, 8)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert distances.shape == gt.shape and first.rows.shape == action.shape == (4,)


# ---------------------------------------------------------------- CUDA (run with -m gpu)


@pytest.mark.gpu
def test_edt_and_oracle_on_cuda_match_cpu_without_sync():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pred, gt = _blobs(64, 64, seed=15), _blobs(64, 64, seed=16)
    not_clicked = _random_masks(64, 64, 64, 0.95, seed=17)
    expected_edt, expected = edt(gt), ritm_click(pred, gt, not_clicked)
    pred, gt, not_clicked = pred.cuda(), gt.cuda(), not_clicked.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        distances = edt(gt)
        got = ritm_click(pred, gt, not_clicked)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(distances.cpu(), expected_edt, rtol=0, atol=0)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0)
