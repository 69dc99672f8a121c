"""Registers the click envs with Gymnasium (single and vector entry points).

- ``SAM2Click-v0``: the project's task (``gpu_env.gym_env``; ``gpu_env.make``'s keywords and
  defaults: with no arguments, the env the main job trains on);
- ``SAM2ClickPrototype-v0``: the Stable-Baselines3 prototype's API and task (six float planes,
  5 clicks; ``gpu_env.compat.SAM2ClickEnv``, ``gpu_env.vector_env.SAM2ClickVectorEnv``).

Importing *this* module registers (that is its only purpose, and Gymnasium's convention for
``gymnasium.make("<module>:<id>")``); no other module of the project imports it, so importing
``gpu_env`` never touches Gymnasium's registry. Either::

    import gymnasium
    env = gymnasium.make("gpu_env.gym_registration:SAM2Click-v0")

or::

    from gpu_env.gym_registration import register_envs
    register_envs()
    env = gymnasium.make("SAM2Click-v0", max_clicks=5)
    envs = gymnasium.make_vec("SAM2Click-v0", num_envs=64, vectorization_mode="vector_entry_point")
"""

from __future__ import annotations

import gymnasium

ENV_ID = "SAM2Click-v0"
PROTOTYPE_ID = "SAM2ClickPrototype-v0"


def register_envs() -> None:
    """Register ``SAM2Click-v0`` and ``SAM2ClickPrototype-v0`` (idempotent)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="gpu_env.gym_env:ClickGymEnv",
                           vector_entry_point="gpu_env.gym_env:ClickGymVectorEnv")
    if PROTOTYPE_ID not in gymnasium.registry:
        gymnasium.register(id=PROTOTYPE_ID, entry_point="gpu_env.compat:SAM2ClickEnv",
                           vector_entry_point="gpu_env.vector_env:SAM2ClickVectorEnv")


register_envs()
