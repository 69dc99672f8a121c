"""The project's task as Gymnasium envs: ``Dict`` observations of every key the env observes.

    import gymnasium, gpu_env.gym_registration
    env = gymnasium.make("SAM2Click-v0")                       # the main job's task
    envs = gymnasium.make_vec("SAM2Click-v0", num_envs=64, vectorization_mode="vector_entry_point")

Both take ``gpu_env.make``'s keywords (or ``env=<a ClickEnv>``). Spaces follow
``gpu_env.obs_spec``: image entries (``observation``, ``sam_prob``, ``mask_prior``,
``gt_error``) are ``uint8`` boxes in 0..255 (values in [0, 1] times 255, rounded), so
Stable-Baselines3's image handling applies unmodified; ``prior_click`` and the SAM2 embedding
are ``float32`` boxes; ``action_mask`` is ``MultiBinary``. ``action_masks()`` returns the mask
for sb3-contrib's ``MaskablePPO``. All dynamics are ``ClickEnv``'s (row ``i`` of the vector env
is row ``i`` of ``ClickEnv.initial_state(B, seed)`` driven by ``step_autoreset``); these are
host-facing APIs that copy each observation to NumPy.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from tensordict import TensorDict

from gpu_env.compat import render_rgb, step_one
from gpu_env.env import ClickEnv
from gpu_env.obs_spec import OBS, ObsField, env_fields
from gpu_env.vector_env import SAM2ClickVectorEnv
from gpu_env.reset_options import check_options, image_index
from gpu_env.rng import SEED_LIMIT, check_seed

__all__ = ["ClickGymEnv", "ClickGymVectorEnv", "gym_space", "to_numpy"]


def _space(field: ObsField) -> spaces.Space:
    if field.entry.role == "mask":
        return spaces.MultiBinary(field.shape[0])
    if field.entry.image:
        return spaces.Box(0, 255, shape=field.shape, dtype=np.uint8)
    return spaces.Box(field.low, field.high, shape=field.shape, dtype=np.float32)


def gym_space(env: ClickEnv) -> spaces.Dict:
    """The ``Dict`` observation space of one episode of ``env`` (keys in observation order)."""
    return spaces.Dict({f.name: _space(f) for f in env_fields(env)})


def to_numpy(obs: TensorDict, fields: tuple[ObsField, ...]) -> dict[str, np.ndarray]:
    """A batched observation as the Gymnasium encoding of ``gym_space`` (leading batch dim)."""
    out = {}
    for f in fields:
        x = obs[f.name]
        if f.entry.role == "mask":
            out[f.name] = x.to(torch.int8).cpu().numpy()
        elif f.entry.image:
            out[f.name] = (x.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        else:
            out[f.name] = x.float().cpu().numpy()
    return out


def _build(env: ClickEnv | None, kwargs: dict) -> ClickEnv:
    if env is None:
        from gpu_env.make import make

        return make(**kwargs)
    if kwargs:
        raise TypeError(f"env=<ClickEnv> already fixes the data, segmenter and settings; "
                        f"{', '.join(sorted(kwargs))} cannot be applied to it.")
    return env


class ClickGymEnv(gymnasium.Env):
    """One click episode at a time (B = 1) of ``gpu_env.make``'s env.

    ``reset(seed=s)`` keys the episode stream as row 0 of ``ClickEnv.initial_state(1, s)``;
    ``options={"image_index": i}`` starts the episode on dataset image ``i``. ``info`` holds
    ``dice``, ``boundary``, ``num_clicks`` and ``image_index``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, env: ClickEnv | None = None, render_mode: str | None = None, **kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; expected None or 'rgb_array'.")
        self.env = _build(env, kwargs)
        self.render_mode = render_mode
        self._fields = env_fields(self.env)
        self.observation_space = gym_space(self.env)
        self.action_space = spaces.Discrete(self.env.num_actions)
        self._state: TensorDict | None = None

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in to_numpy(self.env.observe(self._state), self._fields).items()}

    def _info(self) -> dict:
        st = self._state
        return {"dice": float(st["dice"][0]), "boundary": float(st["boundary"][0]),
                "num_clicks": int(st["num_clicks"][0]), "image_index": int(st["image_id"][0])}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = check_options(options, ("image_index",))
        if seed is not None:
            seed = check_seed(seed)
        super().reset(seed=seed)
        ids = None
        if "image_index" in options:
            ids = torch.from_numpy(image_index(options["image_index"], self.env.num_images, 1))
        if seed is not None or self._state is None:
            key_seed = seed if seed is not None else int(self.np_random.integers(0, SEED_LIMIT))
            self._state = self.env.initial_state(1, key_seed)
            if ids is None:
                return self._obs(), self._info()
        every = torch.ones(1, dtype=torch.bool, device=self.env.device)
        self._state = self.env.reset(self._state, every, None if ids is None else ids.to(self.env.device))
        return self._obs(), self._info()

    def step(self, action: Any):
        self._state, out = step_one(self.env, self._state, action)
        return (self._obs(), float(out["reward"][0]), bool(out["terminated"][0]),
                bool(out["truncated"][0]), self._info())

    def action_masks(self) -> np.ndarray:
        """``bool [2 * G * G]``: the actions allowed now (``ClickEnv.action_mask``)."""
        if self._state is None:
            raise RuntimeError("call reset() before action_masks()")
        return self.env.action_mask(self._state)[0].cpu().numpy()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        return render_rgb(self.env.observe(self._state)[OBS][0].cpu().numpy())


class ClickGymVectorEnv(SAM2ClickVectorEnv):
    """``num_envs`` episodes over one batched ``ClickEnv``, one segmenter call per step.

    ``reset(seed=s)`` keys row ``i`` as ``ClickEnv.initial_state(B, s)``; ``seed=[s_0, ...]``
    keys row ``i`` as a ``ClickGymEnv`` reset with ``seed=s_i``. ``options``: ``reset_mask``
    (bool ``[B]``: only those rows start anew, re-keyed by the seed if one is given) and
    ``image_index`` (an int or one per row). Autoreset is same-step
    (``AutoresetMode.SAME_STEP``): the finished episode's last observation and info are in
    ``info["final_obs"]`` / ``info["final_info"]``, valid where ``info["_final_obs"]``.
    Reset, step, actions, info and render are the prototype vector env's; only the
    observation (``Dict`` of every key) and ``action_masks`` are its own.
    """

    def __init__(self, num_envs: int, env: ClickEnv | None = None, render_mode: str | None = None,
                 **kwargs: Any):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}; expected a positive integer (episodes per call)")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; expected None or 'rgb_array'.")
        self.env = _build(env, kwargs)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self._fields = env_fields(self.env)
        self.single_observation_space = gym_space(self.env)
        self.single_action_space = spaces.Discrete(self.env.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._state: TensorDict | None = None

    def _obs(self, state: TensorDict) -> dict[str, np.ndarray]:
        return to_numpy(self.env.observe(state), self._fields)

    def action_masks(self) -> np.ndarray:
        """``bool [B, 2 * G * G]``: the actions allowed in each row now."""
        if self._state is None:
            raise RuntimeError("call reset() before action_masks()")
        return self.env.action_mask(self._state).cpu().numpy()
