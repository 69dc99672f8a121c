"""The original prototype's single-episode API, as a thin adapter over the batched env (B = 1):
a ``gymnasium.Env`` (``gpu_env.gym_registration`` registers it as ``SAM2ClickPrototype-v0``; the
project's own task is ``SAM2Click-v0``, ``gpu_env.gym_env``).

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

import gymnasium
import numpy as np
import torch

from gpu_env.obs_spec import OBS
from gpu_env.config import PROTOTYPE_ENV
from gpu_env.datasets.base import SegDataset
from gpu_env.env import ClickEnv
from gpu_env.reset_options import check_options, image_index
from gpu_env.rng import SEED_LIMIT, check_seed
from gpu_env.state_spec import BOUNDARY, DICE, IMAGE_ID, NUM_CLICKS
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


class SAM2ClickEnv(gymnasium.Env):
    """Prototype-compatible single-episode env, a ``gymnasium.Env`` (see module docstring).

    Spaces: ``observation_space = Box(0, 1, (6, S, S), float32)``, ``action_space =
    Discrete(2 * G * G)``. ``reset(seed=s)`` keys the episode stream by ``s`` (an integer in
    ``[0, 2**63)``; the same stream as row 0 of ``ClickEnv.initial_state(1, s)``) and seeds
    ``np_random``; a first ``reset()`` without a seed draws one from ``np_random`` (random, as
    Gymnasium does). ``render()`` (``render_mode="rgb_array"``) returns ``uint8 [S, S, 3]``.

    Args:
      dataset: a ``SegDataset``, a dataset source string, or a sequence of
        ``(image HxWx3 uint8, mask HxW)`` pairs.
      sam_predictor: SAM2 model or ``SAM2ImagePredictor``-like object (needed if use_sam).
      obs_size, grid_size, max_clicks: as in the prototype.
      use_sam: False selects the weight-free segmenter (no checkpoint needed).
      device: where the batched env runs.
      render_mode: ``None`` or ``"rgb_array"``.
      **env_kwargs: further ``EnvConfig`` fields (e.g. ``boundary_weight``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, dataset: Any, sam_predictor: Any = None, obs_size: int = 128,
                 grid_size: int = 32, max_clicks: int = 5, use_sam: bool = True,
                 device: str | torch.device = "cpu", encode_batch_size: int = 4,
                 render_mode: str | None = None, **env_kwargs):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; expected None or one of "
                             f"{self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.dataset = _as_dataset(dataset, size=256)
        self.env = ClickEnv(_segmenter(self.dataset, sam_predictor, use_sam, device, encode_batch_size),
                            self.dataset, _env_config(grid_size, max_clicks, obs_size, **env_kwargs))
        s = self.env.config.obs_size
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(6, s, s), dtype=np.float32)
        self.action_space = gymnasium.spaces.Discrete(self.env.num_actions)
        self._seed: int | None = None
        self._state = None

    def _info(self) -> dict:
        st = self._state
        return {"dice": float(st[DICE][0]), "boundary": float(st[BOUNDARY][0]),
                "image_id": self.dataset.ids[int(st[IMAGE_ID][0])],
                "num_clicks": int(st[NUM_CLICKS][0])}

    def _obs(self) -> np.ndarray:
        return self.env.observe(self._state)[OBS][0].cpu().numpy()

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode on a random image (or ``options={"image_index": i}``)."""
        if seed is not None:
            seed = check_seed(seed)  # before Gymnasium's own seeding, which would wrap or differ
        super().reset(seed=seed)
        options = check_options(options, ("image_index",))
        ids = None
        if "image_index" in options:
            ids = torch.from_numpy(image_index(options["image_index"], len(self.dataset), 1)).to(self.env.device)
        if seed is not None or self._state is None:
            # A fresh row keyed by the seed: its first draw is this episode's image.
            self._seed = seed if seed is not None else int(self.np_random.integers(0, SEED_LIMIT))
            self._state = self.env.initial_state(1, self._seed)
            if ids is None:
                return self._obs(), self._info()
        every = torch.ones(1, dtype=torch.bool, device=self.env.device)
        self._state = self.env.reset(self._state, every, ids)
        return self._obs(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._state, out = step_one(self.env, self._state, action)
        return (self._obs(), float(out["reward"][0]), bool(out["terminated"][0]),
                bool(out["truncated"][0]), self._info())

    def render(self) -> np.ndarray | None:
        """``uint8 [S, S, 3]``: the image, the current mask tinted, positive clicks green and
        negative clicks red (``None`` unless ``render_mode="rgb_array"``)."""
        if self.render_mode is None:
            return None
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        return render_rgb(self._obs())

    def close(self) -> None:
        self._state = None
        super().close()


def render_rgb(obs: np.ndarray) -> np.ndarray:
    """``uint8 [S, S, 3]`` picture of a ``[6, S, S]`` observation (see ``SAM2ClickEnv.render``)."""
    rgb = obs[:3].transpose(1, 2, 0).copy()
    mask = obs[3] > 0.5
    rgb[mask] = 0.6 * rgb[mask] + 0.4 * np.array([0.2, 0.4, 1.0], np.float32)
    for channel, colour in ((4, (0.0, 1.0, 0.0)), (5, (1.0, 0.0, 0.0))):
        heat = obs[channel][..., None]
        rgb = (1 - heat) * rgb + heat * np.array(colour, np.float32)
    return (rgb.clip(0, 1) * 255).round().astype(np.uint8)


def scalar_action(action: Any, num_actions: int) -> int:
    """One Gymnasium action (Python/NumPy integer, or a one-element array/tensor) as an int in
    ``[0, num_actions)``; anything else is a ``TypeError``/``ValueError`` naming it."""
    if isinstance(action, (np.ndarray, torch.Tensor)):
        n = action.size if isinstance(action, np.ndarray) else action.numel()
        if n != 1:
            raise ValueError(f"action must be a single integer, got shape {tuple(action.shape)}")
        action = action.reshape(-1)[0].item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise TypeError(f"action must be an int in [0, {num_actions}), got {action!r}")
    if not 0 <= int(action) < num_actions:  # checked in Python: 10**20 fits no int64 tensor
        raise ValueError(f"action {int(action)} is out of range: expected 0 <= a < {num_actions}.")
    return int(action)


def step_one(env: ClickEnv, state: Any, action: Any) -> tuple[Any, Any]:
    """``env.step`` of a one-episode state (B = 1) for the single-episode Gymnasium envs: the
    action checked by :func:`scalar_action`, refused before ``reset()`` and once the episode is
    over. Returns ``(state, out)``."""
    if state is None:
        raise RuntimeError("call reset() before step()")
    a = torch.tensor([scalar_action(action, env.num_actions)], device=env.device)
    term0, trunc0 = env.finished(state)
    if bool(term0[0] | trunc0[0]):
        raise RuntimeError("episode is over (terminated or truncated): call reset()")
    return env.step(state, a)


def _env_config(grid_size: int, max_clicks: int, obs_size: int, **env_kwargs):
    """The prototype's env settings with the given overrides."""
    return replace(PROTOTYPE_ENV, grid_size=grid_size, max_clicks=max_clicks, obs_size=obs_size,
                   **env_kwargs)


def _segmenter(dataset: SegDataset, sam_predictor: Any, use_sam: bool,
               device: str | torch.device, encode_batch_size: int):
    if use_sam and sam_predictor is None:
        raise ValueError("use_sam=True needs sam_predictor (a SAM2 model or predictor); "
                         "pass use_sam=False for the weight-free segmenter.")
    device = torch.device(device)
    model = _sam_model(sam_predictor).to(device) if use_sam else None
    return build_segmenter(
        SegmenterConfig(kind="sam2" if use_sam else "weightfree"), dataset.images, device,
        model=model, encode_batch_size=encode_batch_size,
        originals=lambda: [dataset.load_original(i)[0] for i in range(len(dataset))])
