"""Registers the click env with Gymnasium as ``SAM2Click-v0`` (single and vector entry points).

Importing *this* module registers (that is its only purpose, and Gymnasium's convention for
``gymnasium.make("<module>:<id>")``); no other module of the project imports it, so importing
``gpu_env`` never touches Gymnasium's registry. Either::

    import gymnasium
    env = gymnasium.make("gpu_env.gym_registration:SAM2Click-v0", dataset="synthetic", use_sam=False)

or::

    from gpu_env.gym_registration import register_envs
    register_envs()
    env = gymnasium.make("SAM2Click-v0", dataset="synthetic", use_sam=False)
    envs = gymnasium.make_vec("SAM2Click-v0", num_envs=64, vectorization_mode="vector_entry_point",
                              dataset="synthetic", use_sam=False)
"""

from __future__ import annotations

import gymnasium

ENV_ID = "SAM2Click-v0"


def register_envs() -> None:
    """Register ``SAM2Click-v0`` (idempotent)."""
    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=ENV_ID,
        entry_point="gpu_env.compat:SAM2ClickEnv",
        vector_entry_point="gpu_env.vector_env:SAM2ClickVectorEnv",
    )


register_envs()
