"""The ``Segmenter`` interface shared by the batched SAM2 decoder and the weight-free stand-in.

Conventions (fixed by docs/design.md):

* ``points`` are ``(x, y)`` in pixel-index coordinates of the segmenter's square prompt frame
  of side ``input_size`` (1024 for a standard SAM2 model). A click on low-res pixel
  ``(r, c)`` of an ``M x M`` mask maps to ``x = (c + 0.5) * input_size / M - 0.5``.
* ``labels`` follow SAM2: ``1`` foreground, ``0`` background, ``-1`` unused slot.
  Unused slots must not influence the output (an episode decodes as it would alone).
* Logits are low resolution, ``[B, 1, mask_size, mask_size]``, fp32; ``> 0`` is foreground.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor


class DecodeOutput(NamedTuple):
    logits: Tensor
    """Bx1xMxM low-res mask logits (float32)."""
    score: Tensor
    """B predicted mask quality (SAM2's predicted IoU, or the stand-in's confidence)."""


@runtime_checkable
class Segmenter(Protocol):
    """Click-driven segmenter over a fixed, device-resident set of images."""

    input_size: int
    """Side of the square prompt frame in which points are given (1024 for SAM2)."""
    mask_size: int
    """Side of the square low-res logits (256 for a 1024 SAM2 model)."""
    num_images: int
    """Number of images the segmenter holds; ``image_ids`` index into them."""
    device: torch.device

    def decode(
        self,
        image_ids: Tensor,
        points: Tensor,
        labels: Tensor,
        mask_input: Tensor | None = None,
        has_mask_input: Tensor | None = None,
        multimask: Tensor | bool = False,
    ) -> DecodeOutput:
        """Decode B episodes in one call.

        Args:
          image_ids: ``[B]`` int64 indices into the segmenter's images.
          points: ``[B, K, 2]`` float ``(x, y)`` in the prompt frame.
          labels: ``[B, K]`` int, 1 fg / 0 bg / -1 unused slot.
          mask_input: optional ``[B, 1, M, M]`` previous low-res logits.
          has_mask_input: optional ``[B]`` bool: rows for which ``mask_input`` is used;
            ``None`` with a ``mask_input`` means every row uses it.
          multimask: bool or ``[B]`` bool: SAM2's multimask output (best of three by predicted
            IoU) for those rows, single mask with the dynamic stability fallback otherwise.

        Must not synchronise with the host and must keep static shapes.
        """
        ...

    def image_embedding(self, image_ids: Tensor) -> Tensor | None:
        """``[B, C, h, w]`` cached image embedding for policies that read it, or ``None``."""
        ...


def points_from_pixels(rows: Tensor, cols: Tensor, grid: int, input_size: int) -> Tensor:
    """Centre of cell/pixel ``(rows, cols)`` of a ``grid x grid`` lattice, as ``(x, y)`` in the
    ``input_size`` prompt frame (pixel-index coordinates). Shapes broadcast; returns ``[..., 2]``."""
    scale = input_size / grid
    x = (cols.to(torch.float32) + 0.5) * scale - 0.5
    y = (rows.to(torch.float32) + 0.5) * scale - 0.5
    return torch.stack((x, y), dim=-1)
