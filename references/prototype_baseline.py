"""The approach this project replaces, re-implemented as the benchmark's baseline.

The prototype trained Stable-Baselines3 PPO on a Gymnasium env that ran one episode at a time
(~45 env steps/s for SAM2.1 b+, 500k steps in 185.7 min). What it did per step is kept here:

* **One episode at a time** (B = 1): a Python object with ``reset``/``step``; everything per
  episode is NumPy on the host.
* **A predictor-style call per step**: ``predict(point_coords, point_labels, mask_input,
  multimask_output)`` with NumPy in and NumPy out, on an image whose features are already
  cached (what ``SAM2ImagePredictor.set_image`` keeps). For SAM2 it runs the prompt encoder and
  mask decoder for ONE episode through ``sam_batch.reference.predict_one`` (the same code path
  as ``SAM2ImagePredictor._predict``) on the benchmark device, so each step pays the
  host -> device -> host round trip the prototype paid. All clicks so far are passed every
  step, the previous low-res logits come back as ``mask_input``.
* **Masks, Dice, the boundary F-score, click heatmaps and the RITM oracle on the CPU** with
  NumPy/SciPy. Heatmaps are rebuilt from every click each step; the initial user click is the
  RITM clicker's first click on the GT, recomputed at every reset (the old env cached
  nothing). The clicker logic is RITM's ``Clicker._get_next_click`` (a copy of the port in
  ``references/ritm_clicker.py``, so ``bench`` does not import ``tests``).

Semantics are the project's (docs/design.md): 256x256 working masks, the 32x32 action grid, the
six-channel observation, ``r = dDice + lambda * dBoundaryF``; ``tests/test_prototype_baseline.py``
checks that this env and ``ClickEnv`` agree step by step. One piece of the real predictor's
work is left out: ``SAM2ImagePredictor.predict`` also upsamples the masks to the original image
size; skipping it makes this baseline faster than the prototype, so measured speedups are
conservative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from gpu_env.config import PROTOTYPE_ENV, EnvConfig
from gpu_env.datasets.base import SegDataset
from gpu_env.env import resize_images, resize_masks
from sam_batch.encoder import SAM2Features
from sam_batch.reference import predict_one
# The NumPy/SciPy metrics the prototype computed per step: the project's reference ones.
from references.metrics_ref import boundary_fscore, boundary_iou, dice



# ---------------------------------------------------------------------------------- predictors
class Predictor(Protocol):
    """The per-episode, NumPy-in / NumPy-out segmenter call of the prototype."""

    input_size: int
    mask_size: int

    def set_image(self, index: int) -> None:
        """Select the (already encoded) image that the next ``predict`` calls refer to."""
        ...

    def predict(self, point_coords: np.ndarray, point_labels: np.ndarray,
                mask_input: np.ndarray | None, multimask_output: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``point_coords [k, 2]`` (x, y) in the prompt frame, ``point_labels [k]`` (1/0),
        ``mask_input [1, M, M]`` low-res logits or None -> ``(masks [m, M, M] bool,
        iou [m] float32, low_res_logits [m, M, M] float32)``, m = 3 or 1."""
        ...


def _prompt_tensors(point_coords: np.ndarray, point_labels: np.ndarray,
                    mask_input: np.ndarray | None, device: torch.device, label_dtype: torch.dtype
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One episode's host prompt (SAM2ImagePredictor's arrays) as batch-of-one device tensors:
    coords float32 ``[1, K, 2]``, labels ``label_dtype`` ``[1, K]``, mask input ``[1, 1, h, w]``."""
    coords = torch.as_tensor(point_coords, dtype=torch.float32, device=device)[None]
    labels = torch.as_tensor(point_labels, dtype=label_dtype, device=device)[None]
    m_in = None
    if mask_input is not None:
        m_in = torch.as_tensor(mask_input, dtype=torch.float32, device=device)[None]
    return coords, labels, m_in


class SAM2Predictor:
    """``SAM2ImagePredictor.predict`` on cached features, one episode per call.

    Args:
      model: the SAM2 model the features were encoded with (eval mode, on the device).
      features: ``SAM2Features`` of every image (any device; moved to the model's).
    """

    def __init__(self, model: torch.nn.Module, features: SAM2Features) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.features = SAM2Features(*(t.to(self.device) for t in features))
        self.input_size = int(model.image_size)
        self.mask_size = 4 * int(model.sam_image_embedding_size)
        self._embed: torch.Tensor | None = None
        self._high: list[torch.Tensor] = []

    def set_image(self, index: int) -> None:
        # set_image keeps the image's features in the model dtype; here they come from the cache.
        emb, h0, h1 = (t[index:index + 1].to(self.dtype) for t in self.features)
        self._embed, self._high = emb, [h0, h1]

    def predict(self, point_coords: np.ndarray, point_labels: np.ndarray,
                mask_input: np.ndarray | None, multimask_output: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._embed is None:
            raise RuntimeError("call set_image(index) before predict()")
        coords, labels, m_in = _prompt_tensors(point_coords, point_labels, mask_input,
                                               self.device, torch.int32)
        low_res, iou = predict_one(self.model, self._embed, self._high, coords, labels, m_in,
                                   multimask_output)
        logits = low_res[0].float().cpu().numpy()
        return logits > 0, iou[0].float().cpu().numpy(), logits


class WeightFreePredictor:
    """The same per-episode host round trip around a batched segmenter used at B = 1
    (the weight-free ``GeodesicSegmenter``); ``mask_input``/``multimask`` are passed through."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.device = torch.device(segmenter.device)
        self.input_size = int(segmenter.input_size)
        self.mask_size = int(segmenter.mask_size)
        self._index: torch.Tensor | None = None

    def set_image(self, index: int) -> None:
        self._index = torch.tensor([index], dtype=torch.int64, device=self.device)

    def predict(self, point_coords: np.ndarray, point_labels: np.ndarray,
                mask_input: np.ndarray | None, multimask_output: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._index is None:
            raise RuntimeError("call set_image(index) before predict()")
        coords, labels, m_in = _prompt_tensors(point_coords, point_labels, mask_input,
                                               self.device, torch.int64)
        out = self.segmenter.decode(self._index, coords, labels, mask_input=m_in,
                                    multimask=multimask_output)
        logits = out.logits[0].float().cpu().numpy()
        return logits > 0, out.score.float().cpu().numpy(), logits


# ---------------------------------------------------------------------------------- host metrics
def ritm_next_click(pred: np.ndarray, gt: np.ndarray, not_clicked: np.ndarray
                    ) -> tuple[int, int, bool]:
    """RITM ``Clicker._get_next_click`` on ``Bool[H, W]`` arrays: ``(row, col, is_positive)``."""
    fn = np.pad(gt & ~pred, 1)
    fp = np.pad(~gt & pred, 1)
    fn_dt = distance_transform_edt(fn)[1:-1, 1:-1] * not_clicked
    fp_dt = distance_transform_edt(fp)[1:-1, 1:-1] * not_clicked
    fn_max, fp_max = np.max(fn_dt), np.max(fp_dt)
    is_positive = bool(fn_max > fp_max)
    rows, cols = np.where(fn_dt == fn_max) if is_positive else np.where(fp_dt == fp_max)
    return int(rows[0]), int(cols[0]), is_positive


def heatmaps(points: list[tuple[float, float]], labels: list[int], input_size: int, size: int,
             sigma: float) -> np.ndarray:
    """``[2, S, S]`` float32 fg/bg heatmaps rebuilt from every click (max of Gaussians)."""
    out = np.zeros((2, size, size), dtype=np.float32)
    u = np.arange(size, dtype=np.float32)
    for (x, y), label in zip(points, labels):
        cx = (np.float32(x) + 0.5) * (size / input_size) - 0.5
        cy = (np.float32(y) + 0.5) * (size / input_size) - 0.5
        gx = np.exp(-((u - cx) ** 2) / (2.0 * sigma * sigma))
        gy = np.exp(-((u - cy) ** 2) / (2.0 * sigma * sigma))
        ch = 0 if label == 1 else 1
        np.maximum(out[ch], gy[:, None] * gx[None, :], out=out[ch])
    return out


def nearest_resize(mask: np.ndarray, size: int) -> np.ndarray:
    """``[M, M]`` -> ``[S, S]`` float32, PyTorch's ``nearest`` rule (source = floor(i * M / S))."""
    idx = np.floor(np.arange(size) * (mask.shape[0] / size)).astype(np.int64)
    return mask[np.ix_(idx, idx)].astype(np.float32)


# ---------------------------------------------------------------------------------- the env
@dataclass
class EpisodeData:
    """The host-side arrays of one dataset, at the env's working sizes."""

    rgb: np.ndarray
    """``[N, 3, S, S]`` uint8 observation-size RGB."""
    gt: np.ndarray
    """``[N, M, M]`` bool low-res ground truth."""

    @classmethod
    def from_dataset(cls, dataset: SegDataset, mask_size: int, obs_size: int) -> "EpisodeData":
        rgb = resize_images(dataset.images.cpu(), obs_size).numpy()
        gt = resize_masks(dataset.masks.cpu(), mask_size).numpy()
        return cls(rgb=rgb, gt=gt)


class PrototypeClickEnv:
    """One-episode-at-a-time click env, Gymnasium-style, all per-step logic in NumPy/SciPy.

    Args:
      predictor: ``SAM2Predictor`` or ``WeightFreePredictor`` over the dataset's images.
      data: host arrays of the dataset (``EpisodeData.from_dataset``).
      config: the episode semantics (the same ``EnvConfig`` as the batched env).
      seed: seeds the image draws of ``reset`` (NumPy generator owned by the env).
    """

    def __init__(self, predictor: Predictor, data: EpisodeData, config: EnvConfig = PROTOTYPE_ENV,
                 seed: int = 0) -> None:
        if data.gt.shape[-1] != predictor.mask_size:
            raise ValueError(f"data.gt is {data.gt.shape[-1]} px but the predictor's masks are "
                             f"{predictor.mask_size} px; build EpisodeData with that mask size.")
        self.predictor = predictor
        self.data = data
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []

    @property
    def num_actions(self) -> int:
        return self.config.num_actions

    def _point(self, row: int, col: int, grid: int) -> tuple[float, float]:
        scale = self.predictor.input_size / grid  # centre of (row, col), as points_from_pixels
        return (np.float32(col + 0.5) * np.float32(scale) - np.float32(0.5),
                np.float32(row + 0.5) * np.float32(scale) - np.float32(0.5))

    def _score(self, logits: np.ndarray) -> None:
        """Keep ``logits [M, M]`` (fed back as ``mask_input [1, M, M]``), its mask and scores."""
        self.logits = logits[None]
        self.mask = logits > 0
        self.dice = float(dice(self.mask, self.gt))
        metric = boundary_fscore if self.config.boundary_metric == "fscore" else boundary_iou
        self.boundary = float(metric(self.mask, self.gt, self.config.boundary_tolerance))

    def _obs(self) -> np.ndarray:
        cfg = self.config
        heat = heatmaps(self.points, self.labels, self.predictor.input_size, cfg.obs_size,
                        cfg.heatmap_sigma)
        mask = nearest_resize(self.mask, cfg.obs_size)
        rgb = self.data.rgb[self.image].astype(np.float32) * np.float32(1.0 / 255.0)
        return np.concatenate((rgb, mask[None], heat), axis=0)

    def reset(self, image_index: int | None = None) -> tuple[np.ndarray, dict]:
        """New episode on a random image (or ``image_index``): RITM's first click, a multimask
        decode keeping the best mask by predicted IoU."""
        n = self.data.gt.shape[0]
        self.image = int(self.rng.integers(n)) if image_index is None else int(image_index)
        self.gt = self.data.gt[self.image]
        M = self.gt.shape[0]
        row, col, _ = ritm_next_click(np.zeros_like(self.gt), self.gt, np.ones_like(self.gt))
        self.points, self.labels = [self._point(row, col, M)], [1]
        self.steps = 0
        self.predictor.set_image(self.image)
        _, iou, logits = self.predictor.predict(np.asarray(self.points, np.float32),
                                                np.asarray(self.labels, np.int64), None, True)
        best = int(np.argmax(iou))
        self._score(logits[best])
        return self._obs(), {"dice": self.dice, "boundary": self.boundary, "image": self.image}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One grid click (docs/design.md coding) -> ``(obs, reward, terminated, truncated, info)``."""
        cfg = self.config
        G = cfg.grid_size
        label_bit, cell = divmod(int(action), G * G)
        row, col = divmod(cell, G)
        self.points.append(self._point(row, col, G))
        self.labels.append(1 - label_bit)  # action label 0 = fg -> SAM2 label 1
        mask_input = self.logits if cfg.use_mask_input else None
        _, _, logits = self.predictor.predict(np.asarray(self.points, np.float32),
                                              np.asarray(self.labels, np.int64), mask_input, False)
        old_dice, old_boundary = self.dice, self.boundary
        self._score(logits[0])
        reward = (self.dice - old_dice) + cfg.boundary_weight * (self.boundary - old_boundary)
        self.steps += 1
        terminated = cfg.target_dice is not None and self.dice >= cfg.target_dice
        truncated = self.steps >= cfg.max_clicks and not terminated
        info = {"dice": self.dice, "boundary": self.boundary}
        return self._obs(), float(reward), bool(terminated), bool(truncated), info


def run_episodes(env: PrototypeClickEnv, episodes: int, seed: int = 0) -> int:
    """Play ``episodes`` full episodes with uniformly random actions; returns the agent steps
    taken (the unit of the prototype's steps/s)."""
    rng = np.random.default_rng(seed)
    steps = 0
    for _ in range(episodes):
        env.reset()
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.num_actions)))
            done = terminated or truncated
            steps += 1
    return steps
