"""RITM's click signal against the mask prior, per action cell: the ``prior_click`` observation.

The RITM oracle clicks where the current mask is most wrong: at the pixel of the false-negative
or false-positive region farthest from a correct pixel (docs/design.md). With the mask prior
(an image-only network, ``ppo.prior.MaskPrior``) in place of the GT, that rule is the learned
clicker baseline (``gpu_env.evaluation.clickers.PriorClicker``). This module gives the same
signal as a map over the action grid, so a policy can start from it and learn where to differ:
``prior_click_distance`` -> ``[B, 2, G, G]`` with channel 0 the predicted false negatives
(prior says object, mask says background: a foreground click) and channel 1 the predicted false
positives (a background click), i.e. the action coding's label-major layout. Each cell holds the
largest distance, in grid cells, from a predicted-error pixel of that cell to the nearest pixel
the prior and the mask agree on (the frame border counting as agreement, as in RITM's padded
distance transform); 0 where the cell holds no predicted error. The argmax over both channels
is the cell of RITM's click on the prior at the working resolution ``2 G``.

It reads no ground truth: only the prior map (of the image) and the current mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gpu_env.oracle import error_distances

__all__ = ["prior_click_distance", "PRIOR_CLICK_RESOLUTION_PER_CELL"]

PRIOR_CLICK_RESOLUTION_PER_CELL = 2
"""Pixels per grid cell side at which the distance is computed (64 x 64 for a 32 x 32 grid):
fine enough that the argmax lands in the cell of RITM's click on the prior, coarse enough that
the exact (O(R^3)) distance transform costs ~0.2 ms per row on a CPU core."""


def prior_click_distance(prior: Tensor, mask: Tensor, grid_size: int) -> Tensor:
    """``prior [B, 1, S, S]`` probabilities and ``mask [B, M, M]`` bool -> ``[B, 2, G, G]``
    float32 distances in grid cells (see the module docstring). Both maps are area-resampled to
    ``R = 2 G`` and thresholded at 0.5; then the RITM oracle's own padded error distances
    (``gpu_env.oracle.error_distances``, the prior as the target): exact, no host read."""
    R = PRIOR_CLICK_RESOLUTION_PER_CELL * grid_size
    p = F.adaptive_avg_pool2d(prior.to(torch.float32), R)[:, 0] > 0.5
    m = F.adaptive_avg_pool2d(mask[:, None].to(torch.float32), R)[:, 0] > 0.5
    fn_sq, fp_sq = error_distances(m, p)  # fn: a foreground click, fp: a background click
    dist = torch.stack((fn_sq, fp_sq), dim=1).sqrt() * (1.0 / PRIOR_CLICK_RESOLUTION_PER_CELL)
    return F.max_pool2d(dist, PRIOR_CLICK_RESOLUTION_PER_CELL)
