"""Stable-Baselines3 on the batched env: a ``VecEnv`` whose every step is one batched call.

    from gpu_env.sb3_vec_env import ClickSB3VecEnv
    from stable_baselines3 import PPO
    venv = ClickSB3VecEnv(num_envs=64)            # gpu_env.make's keywords and defaults
    PPO("MultiInputPolicy", venv, n_steps=32).learn(4096)

SB3 ships its own ``DummyVecEnv`` that steps B single envs one by one; this adapter instead
drives ``gpu_env.gym_env.ClickGymVectorEnv`` (one segmenter call for all B rows). It follows
SB3's ``VecEnv`` contract: ``reset()`` returns observations only, ``step_wait()`` returns
``(obs, rewards, dones, infos)`` with a finished row already reset, its last observation in
``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]`` set when it was
truncated. ``action_masks()`` serves sb3-contrib's ``MaskablePPO``. Needs the ``sb3`` extra.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from gpu_env.gym_env import ClickGymVectorEnv

__all__ = ["ClickSB3VecEnv"]


class ClickSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over ``ClickGymVectorEnv(num_envs, **kwargs)`` (or ``vector_env=``)."""

    def __init__(self, num_envs: int = 64, vector_env: ClickGymVectorEnv | None = None,
                 **kwargs: Any):
        self.venv = vector_env if vector_env is not None else ClickGymVectorEnv(num_envs, **kwargs)
        if vector_env is not None and kwargs:
            raise TypeError(f"vector_env= already fixes the env; {', '.join(sorted(kwargs))} "
                            f"cannot be applied to it.")
        super().__init__(self.venv.num_envs, self.venv.single_observation_space,
                         self.venv.single_action_space)
        self._seeds: list[int] | None = None
        self._actions: np.ndarray | None = None

    def reset(self):
        seed = self._seeds
        self._seeds = None
        obs, _ = self.venv.reset(seed=seed)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        done = terminated | truncated
        infos: list[dict] = [{"dice": float(info["dice"][i])} for i in range(self.num_envs)]
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = {k: v[i] for k, v in info["final_obs"].items()}
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i]["episode_dice"] = float(info["final_info"]["dice"][i])
        return obs, reward.astype(np.float32), done, infos

    def action_masks(self) -> np.ndarray:
        """``bool [B, 2 * G * G]`` for ``MaskablePPO``."""
        return self.venv.action_masks()

    def seed(self, seed: int | None = None) -> Sequence[None]:
        """The next ``reset()`` keys row ``i`` by ``seed + i`` (SB3's convention)."""
        self._seeds = None if seed is None else [seed + i for i in range(self.num_envs)]
        return [None] * self.num_envs

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render() if self.venv.render_mode == "rgb_array" else None
        return list(frames) if frames is not None else [None] * self.num_envs

    # The attribute/method plumbing of SB3's VecEnv: one batched env, so every index sees it.
    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        if attr_name == "render_mode":
            return [self.venv.render_mode for _ in self._indices(indices)]
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        if method_name == "action_masks":  # per row, as MaskablePPO's helper asks
            masks = self.action_masks()
            return [masks[i] for i in self._indices(indices)]
        result = getattr(self.venv, method_name)(*args, **kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._indices(indices)]
