"""A Gymnasium vector env over the batched ``ClickEnv``: B episodes advance in one call.

    from gpu_env.vector_env import SAM2ClickVectorEnv
    envs = SAM2ClickVectorEnv(num_envs=256, dataset="synthetic", use_sam=False)
    obs, info = envs.reset(seed=0)                       # obs: float32 [B, 6, S, S]
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())

Unlike ``gymnasium.vector.SyncVectorEnv`` over B copies of ``SAM2ClickEnv``, one step is one
batched segmenter call. Autoreset is *same-step* (``AutoresetMode.SAME_STEP``, declared in
``metadata``): a row whose episode ends is reset within that ``step``, which returns the new
episode's first observation; the finished episode's last observation and info are in
``info["final_obs"]`` / ``info["final_info"]`` (dense arrays, valid where
``info["_final_obs"]`` is True). Row ``i`` under ``reset(seed=s)`` follows exactly row ``i`` of
``ClickEnv.initial_state(B, s)`` driven by ``ClickEnv.step_autoreset``. Observations, rewards
and flags are NumPy arrays on the host, as Gymnasium code expects (one device-to-host copy per
step); for a loop that stays on the device use ``ClickEnv`` or the TorchRL wrapper.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from gpu_env.compat import _as_dataset, _env_config, _segmenter, render_rgb
from gpu_env.obs_spec import OBS
from gpu_env.env import ClickEnv
from gpu_env.reset_options import check_options, reset_rows
from gpu_env.rng import check_seed


class SAM2ClickVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` click episodes over one batched ``ClickEnv`` (see module docstring).

    Args:
      num_envs: B, the number of episodes per call.
      dataset, sam_predictor, obs_size, grid_size, max_clicks, use_sam, device,
        encode_batch_size, **env_kwargs: as ``gpu_env.compat.SAM2ClickEnv``.
      env: an existing ``ClickEnv`` to drive instead (then the other arguments but
        ``num_envs`` and ``render_mode`` must be left unset), e.g. a SAM2 feature-cache env
        from ``ppo.factory.build_envs``.
      render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns one frame per row).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, dataset: Any = None, sam_predictor: Any = None,
                 obs_size: int = 128, grid_size: int = 32, max_clicks: int = 5, use_sam: bool = True,
                 device: str | torch.device = "cpu", encode_batch_size: int = 4,
                 render_mode: str | None = None, env: ClickEnv | None = None, **env_kwargs):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}; expected a positive integer (episodes per call)")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; expected None or one of "
                             f"{self.metadata['render_modes']}")
        if env is None:
            if dataset is None:
                raise ValueError("pass dataset=... (or env=<a ClickEnv>)")
            data = _as_dataset(dataset, size=256)
            env = ClickEnv(_segmenter(data, sam_predictor, use_sam, device, encode_batch_size), data,
                           _env_config(grid_size, max_clicks, obs_size, **env_kwargs))
        elif dataset is not None or sam_predictor is not None or env_kwargs:
            raise ValueError("env=<ClickEnv> already fixes the dataset, segmenter and config; "
                             "pass only num_envs and render_mode with it")
        self.env = env
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        s = env.config.obs_size
        self.single_observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(6, s, s), dtype=np.float32)
        self.single_action_space = gymnasium.spaces.Discrete(env.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._state = None

    # ------------------------------------------------------------------ helpers
    def _obs(self, state) -> np.ndarray:
        return self.env.observe(state)[OBS].cpu().numpy()

    def _info(self, state) -> dict[str, np.ndarray]:
        info = {"dice": state["dice"].cpu().numpy(), "boundary": state["boundary"].cpu().numpy(),
                "num_clicks": state["num_clicks"].cpu().numpy(),
                "image_index": state["image_id"].cpu().numpy()}
        every = np.ones(self.num_envs, dtype=np.bool_)
        return {**info, **{f"_{k}": every for k in list(info)}}

    def _actions(self, actions: Any) -> torch.Tensor:
        a = np.asarray(actions.cpu() if isinstance(actions, torch.Tensor) else actions)
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"actions must be integers in [0, {self.env.num_actions}), got dtype "
                            f"{a.dtype} (an integer too large for int64 is an object array)")
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},) (one per episode), got "
                             f"{a.shape}")
        bad = (a < 0) | (a >= self.env.num_actions)
        if bad.any():
            raise ValueError(f"action {int(a[bad][0])} at row {int(np.flatnonzero(bad)[0])} is out "
                             f"of range: expected 0 <= a < {self.env.num_actions}")
        return torch.from_numpy(a.astype(np.int64)).to(self.env.device)

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every row, or only the rows of ``options["reset_mask"]`` (bool ``[B]``), with or
        without a seed (``seed=s`` keys row ``i`` as ``ClickEnv.initial_state(B, s)``; a list keys
        row ``i`` by ``seed[i]``); ``options["image_index"]``: the images to start on."""
        options = check_options(options, ("reset_mask", "image_index"))
        one_seed = None if isinstance(seed, (list, tuple, np.ndarray)) else seed
        super().reset(seed=None if one_seed is None else check_seed(one_seed))
        self._state = reset_rows(self.env, self._state, self.num_envs, seed, options, self.np_random)
        return self._obs(self._state), self._info(self._state)

    def step(self, actions: Any):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = self._actions(actions)
        nxt, out = self.env.step(self._state, a)
        final_info = self._info(nxt)
        done = out["done"]
        self._state = self.env.reset(nxt, done)
        obs = self._obs(self._state)
        done_np = done.cpu().numpy()
        info = self._info(self._state)
        info.update(final_obs=self._final_obs(nxt, obs, done_np), _final_obs=done_np,
                    final_info=final_info, _final_info=done_np)
        return (obs, out["reward"].cpu().numpy(), out["terminated"].cpu().numpy(),
                out["truncated"].cpu().numpy(), info)

    def _final_obs(self, nxt, obs, done: np.ndarray):
        """``final_obs``: the observation of ``nxt`` (the state before the autoreset) in every
        row. A row that did not finish was not reset, so its observation is the one in ``obs``;
        only the finished rows are observed again (the observation is per row)."""
        rows = np.flatnonzero(done)
        if isinstance(obs, dict):
            final = {k: v.copy() for k, v in obs.items()}
        else:
            final = obs.copy()
        if rows.size:
            last = self._obs(nxt[torch.from_numpy(rows).to(self.env.device)])
            if isinstance(final, dict):
                for k, v in final.items():
                    v[rows] = last[k]
            else:
                final[rows] = last
        return final

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            return None
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        return tuple(render_rgb(o) for o in self.env.observe(self._state)[OBS].cpu().numpy())

    def close_extras(self, **kwargs: Any) -> None:
        self._state = None
