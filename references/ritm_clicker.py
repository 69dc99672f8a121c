"""NumPy/SciPy port of RITM's clicker (``isegm/inference/clicker.py``), one mask at a time.

Kept line-for-line close to the original so that the parity tests compare the batched oracle
with RITM itself. The one substitution: RITM calls ``cv2.distanceTransform(mask, cv2.DIST_L2, 0)``
(mask size 0 = ``DIST_MASK_PRECISE``, the exact Euclidean transform); this port calls
``scipy.ndimage.distance_transform_edt``, the same exact transform, so the project needs no
OpenCV. RITM's ignore label (-1 in ``gt_mask``) is kept.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt


@dataclass
class Click:
    is_positive: bool
    coords: tuple[int, int]  # (y, x)
    indx: int | None = None


class Clicker:
    def __init__(self, gt_mask: np.ndarray | None = None, init_clicks=None, ignore_label: int = -1,
                 click_indx_offset: int = 0) -> None:
        self.click_indx_offset = click_indx_offset
        if gt_mask is not None:
            self.gt_mask = gt_mask == 1
            self.not_ignore_mask = gt_mask != ignore_label
        else:
            self.gt_mask = None
        self.reset_clicks()
        if init_clicks is not None:
            for click in init_clicks:
                self.add_click(click)

    def make_next_click(self, pred_mask: np.ndarray) -> None:
        assert self.gt_mask is not None
        click = self._get_next_click(pred_mask)
        self.add_click(click)

    def get_clicks(self, clicks_limit: int | None = None) -> list[Click]:
        return self.clicks_list[:clicks_limit]

    def _get_next_click(self, pred_mask: np.ndarray, padding: bool = True) -> Click:
        fn_mask = np.logical_and(np.logical_and(self.gt_mask, np.logical_not(pred_mask)), self.not_ignore_mask)
        fp_mask = np.logical_and(np.logical_and(np.logical_not(self.gt_mask), pred_mask), self.not_ignore_mask)

        if padding:
            fn_mask = np.pad(fn_mask, ((1, 1), (1, 1)), "constant")
            fp_mask = np.pad(fp_mask, ((1, 1), (1, 1)), "constant")

        fn_mask_dt = distance_transform_edt(fn_mask)
        fp_mask_dt = distance_transform_edt(fp_mask)

        if padding:
            fn_mask_dt = fn_mask_dt[1:-1, 1:-1]
            fp_mask_dt = fp_mask_dt[1:-1, 1:-1]

        fn_mask_dt = fn_mask_dt * self.not_clicked_map
        fp_mask_dt = fp_mask_dt * self.not_clicked_map

        fn_max_dist = np.max(fn_mask_dt)
        fp_max_dist = np.max(fp_mask_dt)

        is_positive = fn_max_dist > fp_max_dist
        if is_positive:
            coords_y, coords_x = np.where(fn_mask_dt == fn_max_dist)  # coords is [y, x]
        else:
            coords_y, coords_x = np.where(fp_mask_dt == fp_max_dist)  # coords is [y, x]

        return Click(is_positive=bool(is_positive), coords=(int(coords_y[0]), int(coords_x[0])))

    def add_click(self, click: Click) -> None:
        coords = click.coords
        click.indx = self.click_indx_offset + self.num_pos_clicks + self.num_neg_clicks
        if click.is_positive:
            self.num_pos_clicks += 1
        else:
            self.num_neg_clicks += 1
        self.clicks_list.append(click)
        if self.gt_mask is not None:
            self.not_clicked_map[coords[0], coords[1]] = False

    def _remove_last_click(self) -> None:
        click = self.clicks_list.pop()
        coords = click.coords
        if click.is_positive:
            self.num_pos_clicks -= 1
        else:
            self.num_neg_clicks -= 1
        if self.gt_mask is not None:
            self.not_clicked_map[coords[0], coords[1]] = True

    def reset_clicks(self) -> None:
        if self.gt_mask is not None:
            self.not_clicked_map = np.ones_like(self.gt_mask, dtype=bool)
        self.num_pos_clicks = 0
        self.num_neg_clicks = 0
        self.clicks_list: list[Click] = []

    def get_state(self) -> list[Click]:
        return deepcopy(self.clicks_list)

    def set_state(self, state: list[Click]) -> None:
        self.reset_clicks()
        for click in state:
            self.add_click(click)

    def __len__(self) -> int:
        return len(self.clicks_list)


def next_click(pred: np.ndarray, gt: np.ndarray, not_clicked: np.ndarray | None = None) -> tuple[int, int, bool, float]:
    """One oracle query on ``Bool[H, W]`` arrays: ``(row, col, is_positive, chosen max distance)``."""
    clicker = Clicker(gt_mask=gt.astype(np.int64))
    if not_clicked is not None:
        clicker.not_clicked_map = not_clicked.copy()
    click = clicker._get_next_click(pred)
    fn_dt, fp_dt = error_distance_maps(pred, gt, clicker.not_clicked_map)
    chosen = fn_dt if click.is_positive else fp_dt
    return click.coords[0], click.coords[1], click.is_positive, float(chosen.max())


def error_distance_maps(pred: np.ndarray, gt: np.ndarray, not_clicked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RITM's masked ``(fn_dt, fp_dt)`` maps, float64, for inspecting the batched version."""
    fn = np.pad(gt & ~pred, 1)
    fp = np.pad(~gt & pred, 1)
    return (distance_transform_edt(fn)[1:-1, 1:-1] * not_clicked,
            distance_transform_edt(fp)[1:-1, 1:-1] * not_clicked)
