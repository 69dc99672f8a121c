"""A weight-free click segmenter: geodesic distance on image edges from positive vs negative seeds.

The classical interactive method (Bai & Sapiro 2007; Criminisi et al. "GeoS", 2008): a pixel is
foreground when it is geodesically closer to a positive click than to any background seed, where
a path's length is the sum over its steps of ``eps + lam * |contrast-normalised colour change|``,
so paths are cheap inside homogeneous regions and expensive across edges.

Batched, host-sync-free implementation at an internal ``grid x grid`` resolution:

* per image (once, at construction): the image is area-resized to the grid, blurred, and the
  step costs between 4-neighbours are prefix-summed along rows (``sx``) and columns (``sy``);
* per decode: seeds are scattered into ``[B, 2, R, R]`` distance maps (channel 0 positive
  clicks, channel 1 negative clicks plus the frame border at ``border_cost``), then ``sweeps``
  rounds of four directional passes (left->right, right->left, top->bottom, bottom->top) run.
  One pass along a row is exact and vectorised: with ``S`` the prefix sum of step costs,
  ``D[c] = min_{c' <= c} D[c'] + S[c] - S[c']  =  S[c] + cummin(D - S)[c]``; alternating the
  four directions converges to the 4-connected geodesic distance (a path needing more turns
  than ``sweeps`` rounds allow is over-estimated; ``tests`` compare with Dijkstra);
* ``logits = gain * (min(D_bg, max_distance) - D_pos)``: positive = foreground, magnitude =
  geodesic margin. ``max_distance`` caps how far a lone positive click spreads, which (with
  the border prior) gives a sensible mask from positive clicks only. The logits are upsampled
  bilinearly to ``mask_size``.

``mask_input`` and ``multimask`` are accepted and ignored: the output is a pure function of the
image and the clicks (as in classical geodesic segmentation), so feeding back the previous
logits cannot change it. ``score`` is the soft IoU between ``sigmoid(logits)`` and the hard
mask (1 for a confident mask, lower when much of it sits near the decision boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .segmenter import DecodeOutput

_FAR = 1e4  # "unreached" distance: finite so that differences never produce NaN


@dataclass(frozen=True)
class GeodesicConfig:
    """Parameters of the geodesic segmenter (defaults tuned on the synthetic polyp set)."""

    grid: int = 64
    """Internal resolution R of the distance maps (64: fast; 128: finer boundaries, ~4x cost)."""
    sweeps: int = 2
    """Rounds of the four directional passes (fixed iteration count)."""
    blur_sigma: float = 0.8
    """Gaussian blur of the grid-resolution image before costs, in grid pixels."""
    eps: float = 1.0
    """Cost of one step on a flat image (a crossing of the image costs ``grid * eps``)."""
    lam: float = 8.0
    """Weight of the colour change, in units of the image's mean colour change per step."""
    max_distance: float = 40.0
    """Background distance cap: no pixel is foreground beyond this distance from a positive click."""
    border_cost: float = 20.0
    """Starting distance of the background prior on the frame border (0: border is as sure as a
    negative click; large: no border prior)."""
    gain: float = 0.25
    """Logit per unit of geodesic margin."""


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` with reflect padding."""
    if sigma <= 0:
        return x
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def step_costs(images: Tensor, cfg: GeodesicConfig) -> tuple[Tensor, Tensor]:
    """Prefix sums of 4-neighbour step costs of ``[N, 3, S, S]`` uint8 images at ``cfg.grid``.

    Returns ``(sx, syt)``, both ``[N, R, R]`` float32: ``sx[n, r, c]`` is the cost of walking
    row ``r`` from column 0 to ``c``; ``syt[n, c, r]`` the cost of walking column ``c`` from
    row 0 to ``r`` (stored transposed so that both passes scan the last, contiguous, axis).
    """
    R = cfg.grid
    x = F.interpolate(images.float() / 255.0, size=(R, R), mode="area")
    x = _gaussian_blur(x, cfg.blur_sigma)
    dx = (x[..., :, 1:] - x[..., :, :-1]).norm(dim=1)  # [N, R, R-1]
    dy = (x[..., 1:, :] - x[..., :-1, :]).norm(dim=1)  # [N, R-1, R]
    # Contrast normalisation: lam is in units of the image's own mean step change, so a
    # textured image and a flat one get comparable edge costs.
    scale = (dx.mean((1, 2)) + dy.mean((1, 2))).clamp(min=1e-4) / 2
    wx = cfg.eps + cfg.lam * dx / scale[:, None, None]
    wy = cfg.eps + cfg.lam * dy / scale[:, None, None]
    sx = F.pad(wx, (1, 0)).cumsum(-1)
    syt = F.pad(wy.transpose(1, 2), (1, 0)).cumsum(-1)
    return sx.contiguous(), syt.contiguous()


def _scan_pair(d: Tensor, s: Tensor) -> Tensor:
    """Forward then backward exact min-plus pass along the last axis (costs prefix-summed in s)."""
    d = s + torch.cummin(d - s, dim=-1).values
    return torch.cummin((d + s).flip(-1), dim=-1).values.flip(-1) - s


def geodesic_distance(seeds: Tensor, sx: Tensor, syt: Tensor, sweeps: int) -> Tensor:
    """Geodesic distance from seed distances ``[B, C, R, R]`` (0 at seeds, large elsewhere, or
    any starting offsets) under step costs ``sx``/``syt`` ``[B, 1, R, R]`` (see ``step_costs``),
    with ``sweeps`` rounds of the four directional passes. Returns ``[B, C, R, R]``."""
    d = seeds
    for _ in range(sweeps):
        d = _scan_pair(d, sx)
        d = _scan_pair(d.transpose(-1, -2).contiguous(), syt).transpose(-1, -2).contiguous()
    return d


class GeodesicSegmenter:
    """``Segmenter`` over a fixed set of images, by geodesic distance from the clicks.

    Args:
      images: ``[N, 3, S, S]`` uint8 RGB (the dataset's working images); kept on their device.
      config: method parameters.
      input_size: side of the square prompt frame points are given in (1024, as SAM2).
      mask_size: side of the returned logits (256, as SAM2's low-res masks).
    """

    def __init__(
        self,
        images: Tensor,
        config: GeodesicConfig = GeodesicConfig(),
        input_size: int = 1024,
        mask_size: int = 256,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be [N, 3, S, S] uint8, got {tuple(images.shape)} {images.dtype}; "
                "pass the dataset's working images (SegDataset.images)."
            )
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be square, got {tuple(images.shape[-2:])}.")
        if config.grid < 4 or config.sweeps < 1:
            raise ValueError(f"need grid >= 4 and sweeps >= 1, got {config}.")
        self.config = config
        self.input_size = int(input_size)
        self.mask_size = int(mask_size)
        self.num_images = int(images.shape[0])
        self.device = images.device
        R = config.grid
        chunks = [step_costs(images[i:i + 256], config) for i in range(0, self.num_images, 256)]
        self._sx = torch.cat([c[0] for c in chunks])  # [N, R, R]
        self._syt = torch.cat([c[1] for c in chunks])  # [N, R, R]
        border = torch.full((R, R), _FAR, device=self.device)
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = config.border_cost
        self._border = border.view(1, R * R)

    def image_embedding(self, image_ids: Tensor) -> Tensor | None:
        return None

    def _seeds(self, points: Tensor, labels: Tensor) -> Tensor:
        """``[B, 2, R*R]`` starting distances: 0 at clicks (ch. 0 positive, ch. 1 negative),
        the border prior in ch. 1, ``_FAR`` elsewhere. Label -1 slots scatter ``_FAR`` (no-op)."""
        R, B = self.config.grid, points.shape[0]
        points = torch.where((labels >= 0)[..., None], points.float(), 0.0)  # padding may be junk
        # Pixel-index frames: x_in = (c + 0.5) * input/M - 0.5  =>  c = (x_in + 0.5) * R/input - 0.5.
        cr = ((points + 0.5) * (R / self.input_size) - 0.5).round().clamp(0, R - 1).long()
        index = cr[..., 1] * R + cr[..., 0]  # [B, K], row-major (y, x)
        zero, far = torch.zeros((), device=self.device), torch.full((), _FAR, device=self.device)
        values = torch.stack((torch.where(labels == 1, zero, far), torch.where(labels == 0, zero, far)), 1)
        start = torch.full((B, 2, R * R), _FAR, device=self.device)
        start[:, 1] = self._border.expand(B, -1)
        return start.scatter_reduce(2, index[:, None].expand(-1, 2, -1), values, reduce="amin")

    def decode(
        self,
        image_ids: Tensor,
        points: Tensor,
        labels: Tensor,
        mask_input: Tensor | None = None,
        has_mask_input: Tensor | None = None,
        multimask: Tensor | bool = False,
    ) -> DecodeOutput:
        """See ``Segmenter.decode``; ``mask_input``/``has_mask_input``/``multimask`` are ignored.

        Shapes: ``image_ids [B]``, ``points [B, K, 2]`` (x, y) in the ``input_size`` frame,
        ``labels [B, K]`` (1 fg, 0 bg, -1 unused). Returns logits ``[B, 1, mask_size, mask_size]``
        float32 and score ``[B]``.
        """
        cfg, R, B = self.config, self.config.grid, image_ids.shape[0]
        seeds = self._seeds(points, labels).view(B, 2, R, R)
        sx, syt = self._sx[image_ids][:, None], self._syt[image_ids][:, None]
        d = geodesic_distance(seeds, sx, syt, cfg.sweeps)
        margin = torch.clamp(d[:, 1:2], max=cfg.max_distance) - d[:, 0:1]
        logits = cfg.gain * margin
        prob, hard = torch.sigmoid(logits), (logits > 0).float()
        inter = (prob * hard).sum((1, 2, 3))
        union = (prob + hard - prob * hard).sum((1, 2, 3))
        score = inter / union.clamp(min=1e-6)
        if self.mask_size != R:
            logits = F.interpolate(logits, size=(self.mask_size, self.mask_size), mode="bilinear",
                                   align_corners=False)
        return DecodeOutput(logits, score)
