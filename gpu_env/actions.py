"""The action coding (docs/design.md), in one place: action <-> label, cell, point.

``a ∈ [0, 2·G²)``: ``label = a // G²`` (0 = foreground/positive, 1 = background/negative),
``cell = a % G²``, ``row, col = divmod(cell, G)``; the click is the cell centre in the
segmenter's prompt frame. SAM2's point labels are the other way round (1 fg, 0 bg): the flip
between the two lives here only (``sam_label``, ``encode``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sam_batch.segmenter import points_from_pixels


def sam_label(action_label: Tensor) -> Tensor:
    """Action label (0 fg, 1 bg) -> SAM2 point label (1 fg, 0 bg); the flip is its own inverse."""
    return 1 - action_label


def decode(action: Tensor, grid_size: int, input_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """``action [B]`` -> ``(point [B, 2], sam_label [B], cell [B])``: the cell centre in the
    ``input_size`` prompt frame, SAM2's label, and the grid cell."""
    G = grid_size
    cell = torch.remainder(action, G * G)
    label_bit = torch.div(action, G * G, rounding_mode="floor")
    return cell_point(cell, G, input_size), sam_label(label_bit), cell


def encode(label: Tensor, cell: Tensor, grid_size: int) -> Tensor:
    """SAM2 ``label [B]`` (1 fg / 0 bg) and grid ``cell [B]`` -> ``action [B]``."""
    return sam_label(label) * (grid_size * grid_size) + cell


def cell_point(cell: Tensor, grid_size: int, input_size: int) -> Tensor:
    """Grid ``cell [B]`` -> its centre ``[B, 2]`` (x, y) in the ``input_size`` prompt frame."""
    return points_from_pixels(cell // grid_size, cell % grid_size, grid_size, input_size)


def pixel_to_cell(rows: Tensor, cols: Tensor, height: int, width: int, grid_size: int = 32) -> Tensor:
    """``Long[B]`` index ``row * grid_size + col`` of the action-grid cell holding each pixel.

    The ``grid_size x grid_size`` grid tiles the ``height x width`` mask evenly, so pixel row ``r``
    lies in grid row ``floor(r * grid_size / height)`` (``r // 8`` for 256 pixels and 32 cells).
    """
    if height < 1 or width < 1 or grid_size < 1:
        raise ValueError(f"height, width, grid_size must be >= 1, got {height}, {width}, {grid_size}.")
    grid_row = torch.div(rows * grid_size, height, rounding_mode="floor")
    grid_col = torch.div(cols * grid_size, width, rounding_mode="floor")
    return grid_row * grid_size + grid_col
