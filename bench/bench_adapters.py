"""What the library adapters cost: steps/s of SB3's ``VecEnv`` adapter and the Gymnasium vector
env against the raw ``ClickEnv`` they drive, at 64 episodes, in the same run.

Each round is ``STEPS`` steps with uniformly random allowed actions (weight-free segmenter, the
default task of ``gpu_env.make`` over 64 synthetic frames). Two raw baselines: ``raw`` is
``ClickEnv.step_autoreset`` alone (it observes the finished state for bootstrapping, not the next
one); ``raw_with_observation`` also observes the next state, as a learner must. The adapters add
the host copies (uint8 encoding of every observation key, NumPy flags, per-row info dicts) to
the same batched step; ``ratio_to_raw`` and ``ratio_to_raw_with_observation`` in each case's
``extra_info`` divide the baseline's steps/s by theirs.

    python -m pytest bench/bench_adapters.py -p no:cacheprovider --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpu_env.gym_env import ClickGymVectorEnv
from gpu_env.make import make
from gpu_env.sb3_vec_env import ClickSB3VecEnv

B = 64
STEPS = 10
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def env():
    return make(images=64, progress=False, frame_cache=None)  # a benchmark leaves no cache behind


def _actions(masks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(masks.float(), 1, generator=gen)[:, 0]


def _record(benchmark, name: str) -> None:
    RATES[name] = B * STEPS / benchmark.stats.stats.mean
    benchmark.extra_info.update(steps_per_s=RATES[name], batch=B, steps=STEPS,
                                torch_threads=torch.get_num_threads())
    if name != "raw" and "raw" in RATES:
        benchmark.extra_info["ratio_to_raw"] = RATES["raw"] / RATES[name]
    if name.startswith(("gymnasium", "sb3")) and "raw_with_observation" in RATES:
        benchmark.extra_info["ratio_to_raw_with_observation"] = RATES["raw_with_observation"] / RATES[name]


def _raw(benchmark, env, observe: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    state = env.initial_state(B, 0)

    def round_():
        nonlocal state
        for _ in range(STEPS):
            state, _, _ = env.step_autoreset(state, _actions(env.action_mask(state), gen))
            if observe:
                env.observe(state)

    benchmark.pedantic(round_, rounds=5, warmup_rounds=1)


def test_raw_click_env(benchmark, env):
    _raw(benchmark, env, observe=False)
    _record(benchmark, "raw")


def test_raw_click_env_with_observation(benchmark, env):
    # What a learner on the raw env does each step: step, then read the next observation.
    _raw(benchmark, env, observe=True)
    _record(benchmark, "raw_with_observation")


def test_gymnasium_vector_env(benchmark, env):
    gen = torch.Generator().manual_seed(0)
    venv = ClickGymVectorEnv(B, env=env)
    venv.reset(seed=0)

    def round_():
        for _ in range(STEPS):
            venv.step(_actions(torch.from_numpy(venv.action_masks()), gen).numpy())

    benchmark.pedantic(round_, rounds=5, warmup_rounds=1)
    _record(benchmark, "gymnasium_vector")


def test_sb3_vec_env(benchmark, env):
    gen = torch.Generator().manual_seed(0)
    venv = ClickSB3VecEnv(vector_env=ClickGymVectorEnv(B, env=env))
    venv.reset()

    def round_():
        for _ in range(STEPS):
            venv.step(np.asarray(_actions(torch.from_numpy(venv.action_masks()), gen)))

    benchmark.pedantic(round_, rounds=5, warmup_rounds=1)
    _record(benchmark, "sb3_vec_env")
