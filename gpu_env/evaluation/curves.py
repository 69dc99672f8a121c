"""Dice-after-k-clicks curves and NoC of a clicker on held-out images (``evaluate_clicker``).

Episodes run over a fixed list of held-out images in order. Click 0 is the initial user click
(the oracle's first click); clicks 1.. are the policy's. Metrics per click:

* ``dice``/``iou``/``boundary`` at the working (low-res) resolution, as in the reward;
* ``dice_orig``/``iou_orig`` at each image's original resolution: low-res logits upsampled
  bilinearly (``align_corners=False``) to the original size and thresholded at 0, as
  ``SAM2ImagePredictor`` produces masks, against the original GT.

NoC@t (RITM): the number of clicks, the initial one included, until IoU (original resolution)
reaches t; an episode that never reaches it within ``max_clicks`` counts ``max_clicks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from gpu_env import metrics
from gpu_env.datasets.base import SegDataset
from gpu_env.env import ClickEnv
from gpu_env.evaluation.clickers import Clicker
from gpu_env.state_spec import (
    BOUNDARY,
    DICE,
    IMAGE_ID,
    LABELS,
    LOGITS,
    MASK,
    NUM_CLICKS,
    POINTS,
)

NOC_THRESHOLDS = (0.85, 0.90)


@dataclass
class Curves:
    """Per-image metric curves ``[num_images, num_clicks]`` (column k = after click k)."""

    name: str
    dice: np.ndarray
    iou: np.ndarray
    boundary: np.ndarray
    dice_orig: np.ndarray
    iou_orig: np.ndarray
    episodes: list[dict] = field(default_factory=list)
    """Recorded episodes for rendering: image id, clicks, low-res masks per click."""

    def noc(self, threshold: float) -> np.ndarray:
        """Per-image NoC at ``threshold`` (original-resolution IoU)."""
        hit = self.iou_orig >= threshold
        first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, self.iou_orig.shape[1])
        return first.astype(np.float64)

    def summary(self, table_clicks: int = 5) -> dict:
        """Means and standard deviations per click, NoC, boundary at ``table_clicks``."""
        k = min(table_clicks, self.dice.shape[1] - 1)
        out: dict = {"name": self.name, "num_images": int(self.dice.shape[0]), "clicks": k}
        for key in ("dice", "dice_orig", "boundary", "iou"):
            arr = getattr(self, key)[:, : k + 1]
            out[f"{key}_mean"] = arr.mean(axis=0).tolist()
            out[f"{key}_std"] = arr.std(axis=0).tolist()
        for t in NOC_THRESHOLDS:
            noc = self.noc(t)
            tag = f"noc{int(round(t * 100))}"
            out[f"{tag}_mean"] = float(noc.mean())
            out[f"{tag}_std"] = float(noc.std())
            out[f"{tag}_failures"] = int((self.iou_orig.max(axis=1) < t).sum())
        out["max_clicks"] = int(self.dice.shape[1])
        return out


def _orig_metrics(logits: Tensor, gts: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Dice and IoU of low-res ``logits [B,1,M,M]`` upsampled to each original GT's size."""
    dice, iou = [], []
    for lg, gt in zip(logits, gts):
        up = F.interpolate(lg[None].float(), size=tuple(gt.shape), mode="bilinear",
                           align_corners=False)[0, 0] > 0
        dice.append(metrics.dice(up[None], gt[None]))
        iou.append(metrics.iou(up[None], gt[None]))
    return torch.cat(dice), torch.cat(iou)


def evaluate_clicker(env: ClickEnv, dataset: SegDataset, clicker: Clicker | None, image_ids: Tensor,
                     *, num_clicks: int = 20, batch_size: int = 64, record: int = 0,
                     progress: bool = True, name: str | None = None,
                     original_resolution: bool = True) -> Curves:
    """Run ``clicker`` (``None`` = no further clicks) on ``image_ids`` for ``num_clicks`` clicks
    in total (the initial user click included) and return the metric curves.

    ``env`` is re-used with ``max_clicks = num_clicks - 1`` (same constants, no target Dice).
    ``original_resolution=False`` skips the original-size metrics (left at NaN): quick
    evaluations during training use it."""
    if num_clicks < 1:
        raise ValueError(f"num_clicks must be >= 1 (the initial click counts), got {num_clicks}")
    env = env.with_config(replace(env.config, max_clicks=max(num_clicks - 1, 1), target_dice=None))
    name = name or (clicker.name if clicker is not None else "no further clicks")
    ids_all = image_ids.to(env.device, torch.int64)
    n = ids_all.numel()
    cols = {k: np.zeros((n, num_clicks), np.float32) for k in
            ("dice", "iou", "boundary", "dice_orig", "iou_orig")}
    episodes: list[dict] = []
    bar = tqdm(total=n, desc=f"eval {name}", disable=not progress, leave=False)
    for lo in range(0, n, batch_size):
        ids = ids_all[lo: lo + batch_size]
        b = ids.numel()
        state = env.initial_state(b)
        state = env.reset(state, torch.ones(b, dtype=torch.bool, device=env.device), image_ids=ids)
        gts = ([torch.from_numpy(dataset.load_original(int(i))[1]).to(env.device) for i in ids]
               if original_resolution else [])
        n_rec = max(0, record - len(episodes))
        rec = [dict(image_id=int(i), points=[], labels=[], masks=[], dice=[]) for i in ids[:n_rec]]
        for k in range(num_clicks):
            if k > 0 and clicker is not None:
                obs = env.observe(state)
                state, _ = env.step_click(state, *clicker(env, state, obs))
            gt = env.gt[state[IMAGE_ID]]
            if original_resolution:
                d_o, i_o = _orig_metrics(state[LOGITS], gts)
            else:
                d_o = i_o = torch.full((b,), float("nan"), device=env.device)
            row = {"dice": state[DICE], "iou": metrics.iou(state[MASK], gt),
                   "boundary": state[BOUNDARY], "dice_orig": d_o, "iou_orig": i_o}
            for key, val in row.items():
                cols[key][lo: lo + b, k] = val.detach().float().cpu().numpy()
            for j, r in enumerate(rec):
                r["masks"].append(state[MASK][j].cpu().numpy())
                r["dice"].append(float(state[DICE][j]))
                nc = int(state[NUM_CLICKS][j])
                r["points"] = state[POINTS][j, :nc].cpu().numpy().tolist()
                r["labels"] = state[LABELS][j, :nc].cpu().numpy().tolist()
        episodes.extend(rec)
        bar.update(b)
    bar.close()
    return Curves(name=name, episodes=episodes, **cols)
