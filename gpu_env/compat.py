"""The original prototype's single-episode API, as a thin adapter over the batched env (B = 1).

    env = SAM2ClickEnv(dataset=..., sam_predictor=..., obs_size=128, grid_size=32,
                       max_clicks=5, use_sam=True)
    obs, info = env.reset(seed=0)
    obs, reward, done, truncated, info = env.step(action)   # info["dice"]

Observations are NumPy ``float32 [6, obs_size, obs_size]`` and rewards Python floats, as the
Stable-Baselines3 prototype produced; all dynamics are those of ``ClickEnv`` (no second
implementation). This is a host-facing API: it reads values on the host by design.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from gpu_env.config import OBS, PROTOTYPE_ENV
from gpu_env.datasets.base import SegDataset
from gpu_env.env import ClickEnv
from sam_batch.config import SegmenterConfig
from sam_batch.factory import build_segmenter


def compute_dice(pred: Any, gt: Any, eps: float = 1e-6) -> float:
    """Dice of two binary masks (NumPy arrays or tensors, any shape): ``2|P∩G| / (|P|+|G|)``;
    both empty gives 1.0 (the convention of ``gpu_env.metrics.dice``)."""
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred).astype(bool)
    g = np.asarray(gt.detach().cpu() if isinstance(gt, torch.Tensor) else gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} != gt shape {g.shape}; resize one to the other.")
    denom = p.sum() + g.sum()
    if denom == 0:
        return 1.0
    return float(2.0 * np.logical_and(p, g).sum() / denom)


def _as_dataset(dataset: Any, size: int) -> SegDataset:
    if isinstance(dataset, SegDataset):
        return dataset
    if isinstance(dataset, str):
        from gpu_env.datasets import load_dataset

        return load_dataset(dataset, size=size)
    if isinstance(dataset, Sequence) and len(dataset) > 0:
        from gpu_env.datasets import from_arrays

        images, masks = zip(*dataset)
        return from_arrays(list(images), list(masks), size=size, name="user")
    raise TypeError(
        "dataset must be a SegDataset, a dataset source string ('synthetic', 'kvasir:<dir>', "
        f"a folder) or a non-empty sequence of (image, mask) pairs; got {type(dataset).__name__}"
    )


def _sam_model(sam_predictor: Any) -> torch.nn.Module:
    """A SAM2 model from a ``SAM2Base`` or a ``SAM2ImagePredictor``-like object (``.model``)."""
    model = getattr(sam_predictor, "model", sam_predictor)
    if not (hasattr(model, "image_encoder") and hasattr(model, "sam_mask_decoder")):
        raise TypeError(
            "sam_predictor must be a SAM2 model (sam2 SAM2Base) or an object with a `.model` "
            f"SAM2 attribute such as SAM2ImagePredictor; got {type(sam_predictor).__name__}. "
            "Use use_sam=False for the weight-free segmenter."
        )
    return model


class SAM2ClickEnv:
    """Prototype-compatible single-episode env (see module docstring).

    Args:
      dataset: a ``SegDataset``, a dataset source string, or a sequence of
        ``(image HxWx3 uint8, mask HxW)`` pairs.
      sam_predictor: SAM2 model or ``SAM2ImagePredictor``-like object (needed if use_sam).
      obs_size, grid_size, max_clicks: as in the prototype.
      use_sam: False selects the weight-free segmenter (no checkpoint needed).
      device: where the batched env runs.
      **env_kwargs: further ``EnvConfig`` fields (e.g. ``boundary_weight``).
    """

    def __init__(self, dataset: Any, sam_predictor: Any = None, obs_size: int = 128,
                 grid_size: int = 32, max_clicks: int = 5, use_sam: bool = True,
                 device: str | torch.device = "cpu", encode_batch_size: int = 4, **env_kwargs):
        self.dataset = _as_dataset(dataset, size=256)
        if use_sam and sam_predictor is None:
            raise ValueError("use_sam=True needs sam_predictor (a SAM2 model or predictor); "
                             "pass use_sam=False for the weight-free segmenter.")
        device = torch.device(device)
        model = _sam_model(sam_predictor).to(device) if use_sam else None
        data = self.dataset
        segmenter = build_segmenter(
            SegmenterConfig(kind="sam2" if use_sam else "weightfree"), data.images, device,
            model=model, encode_batch_size=encode_batch_size,
            originals=lambda: [data.load_original(i)[0] for i in range(len(data))])
        config = replace(PROTOTYPE_ENV, grid_size=grid_size, max_clicks=max_clicks,
                         obs_size=obs_size, **env_kwargs)
        self.env = ClickEnv(segmenter, self.dataset, config)
        self._seed = 0
        self._state = None

    @property
    def observation_space(self):
        import gymnasium  # optional: only for users who want Gymnasium spaces

        s = self.env.config.obs_size
        return gymnasium.spaces.Box(0.0, 1.0, shape=(6, s, s), dtype=np.float32)

    @property
    def action_space(self):
        import gymnasium

        return gymnasium.spaces.Discrete(self.env.num_actions)

    def _info(self) -> dict:
        st = self._state
        return {"dice": float(st["dice"][0]), "boundary": float(st["boundary"][0]),
                "image_id": self.dataset.ids[int(st["image_id"][0])],
                "num_clicks": int(st["num_clicks"][0])}

    def _obs(self) -> np.ndarray:
        return self.env.observe(self._state)[OBS][0].cpu().numpy()

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode on a random image (or ``options={"image_index": i}``)."""
        ids = None
        if options and "image_index" in options:
            i = int(options["image_index"])
            if not 0 <= i < len(self.dataset):
                raise ValueError(f"image_index {i} out of range [0, {len(self.dataset)})")
            ids = torch.tensor([i], device=self.env.device)
        if seed is not None or self._state is None:
            # A fresh row keyed by the seed: its first draw is this episode's image.
            self._seed = self._seed if seed is None else int(seed)
            self._state = self.env.initial_state(1, self._seed)
            if ids is None:
                return self._obs(), self._info()
        every = torch.ones(1, dtype=torch.bool, device=self.env.device)
        self._state = self.env.reset(self._state, every, ids)
        return self._obs(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if isinstance(action, (np.ndarray, torch.Tensor)):
            n = action.size if isinstance(action, np.ndarray) else action.numel()
            if n != 1:
                raise ValueError(f"action must be a single integer, got shape {tuple(action.shape)}")
            action = action.reshape(-1)[0].item()
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(f"action must be an int in [0, {self.env.num_actions}), got {action!r}")
        a = self.env.validate_action(torch.tensor([int(action)], device=self.env.device), 1)
        term0, trunc0 = self.env.finished(self._state)
        if bool(term0[0] | trunc0[0]):
            raise RuntimeError("episode is over (done or truncated): call reset()")
        self._state, out = self.env.step(self._state, a)
        return (self._obs(), float(out["reward"][0]), bool(out["terminated"][0]),
                bool(out["truncated"][0]), self._info())
