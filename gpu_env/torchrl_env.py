"""TorchRL ``EnvBase`` over the raw batched env, so other TorchRL code can use it as a backend.

The wrapper keeps the current ``ClickEnv`` state; ``_reset``/``_step`` are sync-free (all
masked selects). TorchRL's own ``EnvBase.reset`` does host-side ``.any()`` checks on the done
entries after a reset; our training loop therefore uses ``ClickEnv`` directly (the raw path).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from gpu_env.env import ClickEnv
from gpu_env.obs_spec import ObsField, env_fields
from gpu_env.state_spec import BOUNDARY, DICE


class SAM2ClickTorchRLEnv(EnvBase):
    """``batch_size=[B]`` TorchRL env: keys ``observation`` (+ optional extras), ``dice``,
    ``boundary``, ``action`` (categorical over ``2 * G * G``), ``reward [B, 1]`` and
    ``done``/``terminated``/``truncated [B, 1]``. Partial resets through ``"_reset" [B, 1]``.

    Args:
      env: the raw batched environment.
      batch_size: number of parallel episodes B.
      seed: initial seed of the per-row RNG keys (``set_seed`` changes it).
      validate_actions: check actions (dtype, shape, range) before stepping; this reads a
        value on the host, so turn it off when the policy is trusted and speed matters.
    """

    def __init__(self, env: ClickEnv, batch_size: int, seed: int = 0, validate_actions: bool = True):
        super().__init__(device=env.device, batch_size=torch.Size([batch_size]))
        self.env = env
        self.validate_actions = validate_actions
        self._seed = int(seed)
        cfg = env.config
        B = batch_size
        obs = {field.name: _spec(field, B, self.device) for field in env_fields(env)}
        obs["dice"] = Bounded(0.0, 1.0, shape=(B,), dtype=torch.float32, device=self.device)
        obs["boundary"] = Bounded(0.0, 1.0, shape=(B,), dtype=torch.float32, device=self.device)
        self.observation_spec = Composite(obs, shape=(B,), device=self.device)
        self.action_spec = Categorical(cfg.num_actions, shape=(B,), dtype=torch.int64,
                                       device=self.device)
        self.reward_spec = Unbounded(shape=(B, 1), dtype=torch.float32, device=self.device)
        flag = Categorical(2, shape=(B, 1), dtype=torch.bool, device=self.device)
        self.done_spec = Composite(done=flag.clone(), terminated=flag.clone(),
                                   truncated=flag.clone(), shape=(B,), device=self.device)
        self._state = env.initial_state(batch_size, self._seed)

    @property
    def state(self) -> TensorDict:
        """The raw env state (read-only use; ``gpu_env.state_spec`` declares its keys)."""
        return self._state

    def _observation(self) -> TensorDict:
        td = self.env.observe(self._state)
        td["dice"] = self._state[DICE]
        td["boundary"] = self._state[BOUNDARY]
        return td

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        rows = None if tensordict is None else tensordict.get("_reset", None)
        if rows is None:
            rows = torch.ones(self.batch_size, dtype=torch.bool, device=self.device)
        else:
            rows = rows.reshape(self.batch_size).to(self.device)
        self._state = self.env.reset(self._state, rows)
        out = self._observation()
        terminated, truncated = self.env.finished(self._state)
        out["terminated"] = terminated[:, None]
        out["truncated"] = truncated[:, None]
        out["done"] = (terminated | truncated)[:, None]
        return out

    def _check_batch(self, tensordict: TensorDictBase) -> None:
        """Shapes only (metadata, no host read), so it runs even without ``validate_actions``."""
        B = self.batch_size[0]
        if tuple(tensordict.batch_size) != (B,):
            raise ValueError(
                f"step() got a tensordict of batch size {list(tensordict.batch_size)}, but this env "
                f"runs {B} episodes (batch_size=[{B}]); pass the tensordict from reset()/the last "
                f"step with one action per episode in \"action\" (shape ({B},))."
            )
        action = tensordict.get("action", None)
        if action is None:
            raise KeyError('step() needs an "action" entry (int64, one per episode)')
        if tuple(action.shape) != (B,):
            raise ValueError(f'"action" must have shape ({B},) (one action per episode), got '
                             f"{tuple(action.shape)}.")

    def step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._check_batch(tensordict)
        return super().step(tensordict)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._check_batch(tensordict)
        action = tensordict["action"]
        if self.validate_actions:
            action = self.env.validate_action(action, self.batch_size[0])
        self._state, info = self.env.step(self._state, action)
        out = self._observation()
        out["reward"] = info["reward"][:, None]
        out["terminated"] = info["terminated"][:, None]
        out["truncated"] = info["truncated"][:, None]
        out["done"] = info["done"][:, None]
        return out

    def _set_seed(self, seed: int | None) -> None:
        """Re-key every row from ``seed`` (a private counter-based RNG; the global torch RNG is
        never used). Takes effect at the next reset."""
        self._seed = 0 if seed is None else int(seed)
        self._state = self.env.initial_state(self.batch_size[0], self._seed)


def _spec(field: ObsField, B: int, device: torch.device):
    """The TorchRL spec of one observation entry for ``B`` episodes."""
    shape = (B, *field.shape)
    if field.entry.role == "mask":
        return Categorical(2, shape=shape, dtype=torch.bool, device=device)
    if field.low == float("-inf"):
        return Unbounded(shape=shape, dtype=field.dtype, device=device)
    return Bounded(field.low, field.high, shape=shape, dtype=field.dtype, device=device)
