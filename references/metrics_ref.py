"""NumPy/SciPy references for gpu_env.metrics, one ``Bool[H, W]`` mask pair at a time, float64.

Written from the definitions, not from the device code: the boundary F-score matches pixels
through a Euclidean distance transform (not a disk dilation), and Boundary IoU erodes ``d``
times with a 3x3 square as Cheng et al.'s ``mask_to_boundary`` does (not one big square).
Pixels outside the image are background (``border_value=0``), so the image border is a contour.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt

_SQUARE_3x3 = np.ones((3, 3), dtype=bool)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    total = pred.sum() + gt.sum()
    return 1.0 if total == 0 else 2.0 * (pred & gt).sum() / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = (pred | gt).sum()
    return 1.0 if union == 0 else (pred & gt).sum() / union


def boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Mask pixels removed by ``width`` successive 3x3 erosions with background outside."""
    eroded = binary_erosion(mask, structure=_SQUARE_3x3, iterations=width, border_value=0)
    return mask & ~eroded


def _within(edge: np.ndarray, target: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels of ``edge`` at Euclidean distance <= tolerance from a True pixel of ``target``."""
    if not target.any():
        return np.zeros_like(edge)
    return edge & (distance_transform_edt(~target) <= tolerance)


def boundary_fscore(pred: np.ndarray, gt: np.ndarray, tolerance: int) -> float:
    pred_edge, gt_edge = boundary(pred), boundary(gt)
    if not pred_edge.any() and not gt_edge.any():
        return 1.0
    if not pred_edge.any() or not gt_edge.any():
        return 0.0
    precision = _within(pred_edge, gt_edge, tolerance).sum() / pred_edge.sum()
    recall = _within(gt_edge, pred_edge, tolerance).sum() / gt_edge.sum()
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def boundary_iou(pred: np.ndarray, gt: np.ndarray, tolerance: int) -> float:
    pred_band, gt_band = boundary(pred, tolerance), boundary(gt, tolerance)
    union = (pred_band | gt_band).sum()
    return 1.0 if union == 0 else (pred_band & gt_band).sum() / union
