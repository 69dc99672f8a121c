"""gpu_env.state_spec declares the env state: every key the env holds, with its shape, dtype and
initial fill, and nothing the env does not hold."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from gpu_env import state_spec
from gpu_env.make import make
from gpu_env.state_spec import (
    BOUNDARY,
    DICE,
    EPISODE,
    HEAT,
    KEY,
    LABELS,
    LOGITS,
    MASK,
    POINTS,
    STATE,
    STATE_KEYS,
    StateEntry,
    empty_state,
    state_entry,
    state_shapes,
    state_table,
)

B = 5
CONFIGS = {
    "default": {"images": 8, "image_size": 64, "progress": False},
    "small": {"images": 8, "image_size": 64, "obs_size": 64, "grid_size": 8, "max_clicks": 3,
              "progress": False},
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def env(request):
    return make(**CONFIGS[request.param])


def spec_shapes(env, batch_size: int = B) -> dict[str, tuple[int, ...]]:
    cfg = env.config
    return state_shapes(batch_size, max_points=cfg.max_points, mask_size=env.mask_size,
                        obs_size=cfg.obs_size, grid_size=cfg.grid_size)


def assert_declared(state: TensorDict, shapes: dict[str, tuple[int, ...]]) -> None:
    """``state`` holds exactly the spec's keys, in its order, with its shapes and dtypes."""
    assert list(state.keys()) == list(STATE_KEYS)
    for e in STATE:
        assert tuple(state[e.name].shape) == shapes[e.name], e.name
        assert state[e.name].dtype == e.dtype, e.name


def test_keys_and_constants():
    assert len(set(STATE_KEYS)) == len(STATE) == 13
    for e in STATE:
        assert getattr(state_spec, e.name.upper()) == e.name
        assert state_entry(e.name) is e
    with pytest.raises(KeyError, match="image_id"):
        state_entry("imageid")
    with pytest.raises(ValueError, match="symbol"):
        StateEntry("x", "", ("B", "N"), torch.int64)


def test_docstring_table_is_the_spec():
    assert state_table() in state_spec.__doc__


def test_shapes_resolve_the_symbols():
    shapes = state_shapes(3, max_points=6, mask_size=32, obs_size=16, grid_size=4)
    assert shapes == {"image_id": (3,), "key": (3,), "points": (3, 6, 2), "labels": (3, 6),
                      "num_clicks": (3,), "step": (3,), "logits": (3, 1, 32, 32),
                      "mask": (3, 32, 32), "dice": (3,), "boundary": (3,),
                      "heat": (3, 2, 16, 16), "clicked": (3, 16), "episode": (3,)}


def test_dtypes_are_the_envs():
    f32, i64, b = torch.float32, torch.int64, torch.bool
    assert {e.name: e.dtype for e in STATE} == {
        "image_id": i64, "key": i64, "points": f32, "labels": i64, "num_clicks": i64,
        "step": i64, "logits": f32, "mask": b, "dice": f32, "boundary": f32, "heat": f32,
        "clicked": b, "episode": i64}


def test_empty_state_holds_each_fill():
    state = empty_state(B, max_points=4, mask_size=16, obs_size=8, grid_size=4)
    assert state.batch_size == torch.Size([B])
    assert_declared(state, state_shapes(B, max_points=4, mask_size=16, obs_size=8, grid_size=4))
    for e in STATE:
        assert (state[e.name] == e.fill).all(), e.name
    assert state_entry(LABELS).fill == -1 and state_entry(EPISODE).fill == -1
    assert sum(e.fill != 0 for e in STATE) == 2  # every other key starts at zero


def test_initial_state_is_the_spec(env):
    state = env.initial_state(B, seed=3)
    assert_declared(state, spec_shapes(env))
    assert state.device == env.device
    # the first reset counts from the spec's fill: episode -1 -> 0
    assert (state[EPISODE] == state_entry(EPISODE).fill + 1).all()
    # the keys are the rows' own (not the spec's fill), advanced once by the reset
    assert state[KEY].unique().numel() == B


def test_reset_draws_values_of_the_spec_dtypes(env):
    """A fresh episode's values are gathers of per-image constants: those are born in the
    spec's dtypes (not promoted to them by ``where`` against an ``empty_state``)."""
    born = {POINTS: env.first_point, LOGITS: env.init_logits, MASK: env.init_mask,
            DICE: env.init_dice, BOUNDARY: env.init_boundary, HEAT: env.init_heat}
    for name, value in born.items():
        assert value.dtype == state_entry(name).dtype, name
        per_row = spec_shapes(env)[name][2 if name == POINTS else 1:]  # points: the first slot's
        assert tuple(value.shape[1:]) == per_row, name
    assert env.image_pool.dtype == state_entry("image_id").dtype


def test_step_and_reset_return_only_declared_keys(env):
    shapes = spec_shapes(env)
    state = env.initial_state(B, seed=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(env.config.max_clicks + 1):
        action = torch.randint(0, env.num_actions, (B,), generator=g)
        state, out = env.step(state, action)
        assert_declared(state, shapes)
        state = env.reset(state, out["done"])
        assert_declared(state, shapes)
    rows = torch.tensor([True, False, True, False, False])
    assert_declared(env.reset(state, rows, image_ids=torch.arange(B)), shapes)
    nxt, _, _ = env.step_autoreset(state, torch.zeros(B, dtype=torch.int64))
    assert_declared(nxt, shapes)
