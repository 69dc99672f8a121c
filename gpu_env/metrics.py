"""Batched segmentation metrics on the device: Dice, IoU, boundary F-score, Boundary IoU.

Inputs are ``Bool[B, H, W]`` masks; outputs ``Float32[B]``. Counts are int32 sums of the mask bytes,
returned as float32 (exact up to 2**24 pixels per image). No value leaves the device and no branch reads a tensor.

Boundary conventions (one for both boundary metrics, following Boundary IoU's reference code,
Cheng et al. 2021, which pads with background "so mask truncated by the image border is also
considered as boundary"):

- **The image border is a contour.** Erosion treats pixels outside the image as background
  (Kornia ``border_type="constant", border_value=0``), so a mask touching the border has boundary
  pixels along it, and a full-image mask's boundary is the outer ring of width ``d``.
- ``boundary(m) = m & ~erode_3x3(m)``: the mask pixels with a background 8-neighbour. A one-pixel
  object is its own boundary; every non-empty mask has a non-empty boundary.
- **Boundary F-score** matches boundary pixels within Euclidean distance ``tolerance`` (a disk
  structuring element, as the DAVIS contour measure): precision is the fraction of predicted
  boundary pixels within ``tolerance`` of a GT boundary pixel, recall the converse,
  ``F = 2PR / (P + R)``.
- **Boundary IoU** uses the band of mask pixels within chessboard distance ``d = tolerance`` of
  a background pixel (or of the outside), ``G_d ∩ G = G & ~erode_{(2d+1)x(2d+1)}(G)`` (Cheng et al. erode ``d`` times with a
  3x3 square, which is the same set), and returns the IoU of the two bands.

Edge values (pinned by tests): both masks empty -> 1.0 for every metric; exactly one empty ->
0.0; identical non-empty masks -> 1.0 (full image included).

Binary morphology: the functions default to ``kornia.morphology`` with its ``shift`` engine
(exact, and its memory stays at a few mask-sized buffers whatever the kernel, where ``unfold``,
Kornia's ``auto`` choice on CUDA, materialises ``k_h * k_w`` copies of the batch: 25 x 256 MiB
for B=1024 masks of 256x256 with a 5x5 disk). The env picks the engine with
``default_engine``: Kornia on accelerators, and on a CPU ``"bool"``, the same disk and square
decomposed into separable shifted ORs on bytes (~15x cheaper there than float max-pooling,
``"pool"``, itself cheaper than Kornia). Every engine gives the same masks (parity-tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.morphology import dilation, erosion
from torch import Tensor


def _check_pair(pred: Tensor, gt: Tensor) -> None:
    for name, mask in (("pred", pred), ("gt", gt)):
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 3:
            got = f"dtype={mask.dtype} shape={tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"{name} must be a Bool[B, H, W] tensor, got {got}; threshold logits first (`logits > 0`)."
            )
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but gt has {tuple(gt.shape)}; they must match.")


def _check_tolerance(tolerance: int, minimum: int) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < minimum:
        raise ValueError(f"tolerance must be an int >= {minimum} (pixels), got {tolerance!r}.")


def _count(mask: Tensor) -> Tensor:
    # Summing the bytes as int32 is exact and ~5x faster on CPU than a float32 sum (which
    # converts every pixel first); the counts are then exact in float32 (< 2**24).
    return mask.view(torch.uint8).sum(dim=(1, 2), dtype=torch.int32).to(torch.float32)


def _ratio(numerator: Tensor, denominator: Tensor, empty: float) -> Tensor:
    """``numerator / denominator``, and ``empty`` where the denominator is 0."""
    positive = denominator > 0
    # The safe denominator keeps 0/0 from making a NaN that where() would still have to skip.
    return torch.where(positive, numerator / torch.where(positive, denominator, 1.0), empty)


def square_kernel(radius: int, device: torch.device | None = None) -> Tensor:
    """``Float32[2r+1, 2r+1]`` of ones: the chessboard ball of radius ``r``."""
    return torch.ones(2 * radius + 1, 2 * radius + 1, device=device)


def disk_kernel(radius: int, device: torch.device | None = None) -> Tensor:
    """``Float32[2r+1, 2r+1]``: 1 where ``i² + j² <= r²`` (the Euclidean ball of radius ``r``)."""
    offsets = torch.arange(-radius, radius + 1, device=device)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius).float()


def erode(mask: Tensor, kernel: Tensor, engine: str = "shift") -> Tensor:
    """Binary erosion of ``Bool[B, H, W]`` by a flat ``kernel``; outside the image is background."""
    out = erosion(mask[:, None].float(), kernel, border_type="constant", border_value=0.0, engine=engine)
    return out[:, 0] > 0.5


def dilate(mask: Tensor, kernel: Tensor, engine: str = "shift") -> Tensor:
    """Binary dilation of ``Bool[B, H, W]`` by a flat ``kernel``; outside the image is background."""
    out = dilation(mask[:, None].float(), kernel, border_type="constant", border_value=0.0, engine=engine)
    return out[:, 0] > 0.5


def _pool_dilate_rects(mask: Tensor, rects: list[tuple[int, int]]) -> Tensor:
    """Binary dilation by the union of centred ``(2a+1) x (2b+1)`` rectangles, via max-pooling
    of the zero-padded mask (outside the image is background, as in the Kornia path)."""
    x = mask[:, None].to(torch.float32)
    out = None
    for a, b in rects:
        y = F.max_pool2d(F.pad(x, (b, b, a, a)), (2 * a + 1, 2 * b + 1), stride=1)
        out = y if out is None else torch.maximum(out, y)
    return out[:, 0] > 0.5


def _disk_rects(radius: int) -> list[tuple[int, int]]:
    """The Euclidean disk of ``disk_kernel(radius)`` as a union of centred rectangles."""
    return [(dy, math.isqrt(radius * radius - dy * dy)) for dy in range(radius + 1)]


def _bool_dilate_1d(x: Tensor, radius: int, dim: int) -> Tensor:
    """Dilation of ``Bool[B, H, W]`` by a segment of ``2r+1`` pixels along ``dim`` (-1: rows,
    -2: columns); outside the image is background. Shifted ORs on bytes: exact, and memory
    stays at two mask-sized buffers."""
    if radius == 0:
        return x
    out = x.clone()
    n = x.shape[dim]
    for k in range(1, min(radius, n - 1) + 1):
        out.narrow(dim, k, n - k).logical_or_(x.narrow(dim, 0, n - k))
        out.narrow(dim, 0, n - k).logical_or_(x.narrow(dim, k, n - k))
    return out


def _bool_dilate_rects(mask: Tensor, rects: list[tuple[int, int]]) -> Tensor:
    """``_pool_dilate_rects`` on bytes: each ``(2a+1) x (2b+1)`` rectangle is a row segment of
    radius ``b`` then a column segment of radius ``a`` (separable); the row pass of a radius is
    shared by every rectangle that needs it."""
    rows: dict[int, Tensor] = {}
    out = None
    for a, b in rects:
        if b not in rows:
            rows[b] = _bool_dilate_1d(mask, b, -1)
        y = _bool_dilate_1d(rows[b], a, -2)
        out = y if out is None else (out | y)
    return out


def dilate_disk(mask: Tensor, radius: int, engine: str = "shift") -> Tensor:
    """Dilation by ``disk_kernel(radius)``: Kornia (``engine`` = a Kornia engine), or one of
    two exact decompositions of the disk into centred rectangles (parity-tested against Kornia):
    ``engine="pool"`` (float max-pooling) and ``engine="bool"`` (separable shifted ORs on
    bytes, the fastest on CPU)."""
    if engine == "pool":
        return _pool_dilate_rects(mask, _disk_rects(radius))
    if engine == "bool":
        return _bool_dilate_rects(mask, _disk_rects(radius))
    return dilate(mask, disk_kernel(radius, mask.device), engine)


def erode_square(mask: Tensor, radius: int, engine: str = "shift") -> Tensor:
    """Erosion by ``square_kernel(radius)`` (outside the image is background); ``engine`` as in
    ``dilate_disk``."""
    if engine == "pool":
        return ~_pool_dilate_rects(~mask, [(radius, radius)]) & _inside(mask, radius)
    if engine == "bool":
        return ~_bool_dilate_rects(~mask, [(radius, radius)]) & _inside(mask, radius)
    return erode(mask, square_kernel(radius, mask.device), engine)


def _inside(mask: Tensor, radius: int) -> Tensor:
    """``[1, H, W]``: pixels at least ``radius`` away from the image border (a square erosion
    with background outside can only keep those)."""
    H, W = mask.shape[-2:]
    rows = torch.arange(H, device=mask.device)
    cols = torch.arange(W, device=mask.device)
    ok_r = (rows >= radius) & (rows < H - radius)
    ok_c = (cols >= radius) & (cols < W - radius)
    return (ok_r[:, None] & ok_c[None, :])[None]


def default_engine(device: torch.device) -> str:
    """Kornia's ``shift`` engine on accelerators; on CPU the equivalent separable boolean
    path (``"bool"``), where Kornia's float shift-and-reduce costs ~10x more and float
    max-pooling ~10x more again at B=64."""
    return "bool" if torch.device(device).type == "cpu" else "shift"


def boundary(mask: Tensor, width: int = 1, engine: str = "shift") -> Tensor:
    """``Bool[B, H, W]``: mask pixels within chessboard distance ``width`` of the background
    (image border included); ``width=1`` gives the pixels with a background 8-neighbour."""
    return mask & ~erode_square(mask, width, engine)


def dice(pred: Tensor, gt: Tensor) -> Tensor:
    """``Float32[B]``: ``2|P∩G| / (|P| + |G|)``; 1.0 when both masks are empty."""
    _check_pair(pred, gt)
    return _ratio(2.0 * _count(pred & gt), _count(pred) + _count(gt), empty=1.0)


def iou(pred: Tensor, gt: Tensor) -> Tensor:
    """``Float32[B]``: ``|P∩G| / |P∪G|``; 1.0 when both masks are empty."""
    _check_pair(pred, gt)
    return _ratio(_count(pred & gt), _count(pred | gt), empty=1.0)


def boundary_fscore(pred: Tensor, gt: Tensor, tolerance: int, engine: str = "shift",
                    gt_terms: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``Float32[B]`` boundary F-score with a Euclidean match ``tolerance`` in pixels (>= 0).

    Both masks empty -> 1.0 (nothing to match). One empty -> 0.0. Otherwise both boundaries are
    non-empty; ``F = 0`` when no boundary pixel is matched. ``engine``: Kornia morphology engine.
    ``gt_terms``: ``fscore_gt_terms(gt, tolerance)`` precomputed (the env computes it once per
    image, halving the morphology per step); the result is identical.
    """
    _check_pair(pred, gt)
    _check_tolerance(tolerance, minimum=0)
    gt_edge, gt_near = fscore_gt_terms(gt, tolerance, engine) if gt_terms is None else gt_terms
    pred_edge = boundary(pred, 1, engine)
    n_pred, n_gt = _count(pred_edge), _count(gt_edge)
    precision = _ratio(_count(pred_edge & gt_near), n_pred, empty=0.0)
    recall = _ratio(_count(gt_edge & dilate_disk(pred_edge, tolerance, engine)), n_gt, empty=0.0)
    fscore = _ratio(2.0 * precision * recall, precision + recall, empty=0.0)
    both_empty = (n_pred == 0) & (n_gt == 0)
    return torch.where(both_empty, 1.0, fscore)


def fscore_gt_terms(gt: Tensor, tolerance: int, engine: str = "shift") -> tuple[Tensor, Tensor]:
    """The prediction-independent half of ``boundary_fscore``: ``(gt boundary, pixels within
    tolerance of it)``, both ``Bool[B, H, W]``."""
    edge = boundary(gt, 1, engine)
    return edge, dilate_disk(edge, tolerance, engine)


def boundary_iou(pred: Tensor, gt: Tensor, tolerance: int, engine: str = "shift",
                 gt_band: Tensor | None = None) -> Tensor:
    """``Float32[B]`` Boundary IoU (Cheng et al. 2021) with band width ``d = tolerance`` (>= 1)
    pixels, chessboard distance: ``|(G_d∩G) ∩ (P_d∩P)| / |(G_d∩G) ∪ (P_d∩P)|``.

    Both masks empty -> 1.0; one empty -> 0.0 (the other's band is non-empty).
    ``engine``: Kornia morphology engine. ``gt_band``: ``boundary(gt, tolerance)`` precomputed.
    """
    _check_pair(pred, gt)
    _check_tolerance(tolerance, minimum=1)
    pred_band = boundary(pred, tolerance, engine)
    gt_band = boundary(gt, tolerance, engine) if gt_band is None else gt_band
    return _ratio(_count(pred_band & gt_band), _count(pred_band | gt_band), empty=1.0)
