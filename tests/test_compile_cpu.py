"""``--compile`` on a CPU, as far as a CPU can check what the GPU path relies on.

- The env step and the policy are captured whole (``fullgraph=True``, no graph break) and the
  captured graph computes what eager computes (``aot_eager``: capture without code generation,
  bitwise equal).
- When the backend cannot generate code for the step (Inductor's C++ backend in torch 2.13 on
  the boundary morphology), training warns once, naming the error, and steps eagerly; any other
  error is raised.
- A training run with ``compile`` on (slow: Inductor compiles the policy) completes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gpu_env.config import EnvConfig
from gpu_env.datasets import load_dataset
from gpu_env.env import ClickEnv
from ppo.config import PolicyConfig
from ppo.policies import build_policy
from ppo.train import CompiledStep, Trainer
from sam_batch.geodesic import GeodesicSegmenter
from tests.test_train import tiny


@pytest.fixture(scope="module")
def env() -> ClickEnv:
    data = load_dataset("synthetic", split="train", size=256, count=6)
    env = ClickEnv(GeodesicSegmenter(data.images), data, replace(EnvConfig(), max_clicks=3))
    g = torch.Generator().manual_seed(0)
    env.set_mask_prior(torch.rand(6, 1, env.config.obs_size, env.config.obs_size, generator=g))
    return env


def _equal(a, b) -> bool:
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x.keys(True, True))


@torch.no_grad()
def test_env_step_is_one_graph_equal_to_eager(env):
    torch._dynamo.reset()
    step = torch.compile(env.step, fullgraph=True, dynamic=False, backend="aot_eager")
    state = env.initial_state(5, seed=3)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        action = torch.randint(0, env.num_actions, (5,), generator=g)
        ref, got = env.step(state, action), step(state, action)
        assert _equal(ref, got)
        state = ref[0]


def test_policy_forward_and_backward_are_one_graph_equal_to_eager(env):
    torch._dynamo.reset()
    net = build_policy(PolicyConfig(width=8), env.config, seed=0, device=torch.device("cpu"))
    obs = env.observe(env.initial_state(4, seed=2))
    inputs = {k: obs.get(k) for k in net.in_keys}
    compiled = torch.compile(net, fullgraph=True, dynamic=False, backend="aot_eager")
    (ref_logits, ref_value), (logits, value) = net(**inputs), compiled(**inputs)
    assert torch.equal(ref_logits, logits) and torch.equal(ref_value, value)
    ref_grads = torch.autograd.grad(ref_logits.logsumexp(1).sum() + ref_value.sum(),
                                    [p for p in net.parameters() if p.requires_grad])
    grads = torch.autograd.grad(logits.logsumexp(1).sum() + value.sum(),
                                [p for p in net.parameters() if p.requires_grad])
    for r, c in zip(ref_grads, grads):
        assert torch.allclose(r, c, rtol=1e-5, atol=1e-7)


def test_step_falls_back_to_eager_when_the_backend_fails(env):
    from torch._inductor.exc import InductorError

    wrapped = CompiledStep(env, backend="aot_eager")

    def broken(*args, **kwargs):
        raise InductorError(RuntimeError("CppCompileError: C++ compile error"), None)

    wrapped.compiled = broken
    state = env.initial_state(3, seed=0)
    action = torch.zeros(3, dtype=torch.long)
    with pytest.warns(RuntimeWarning, match="could not be compiled.*CppCompileError"):
        out = wrapped.step(state, action)
    assert wrapped.fallback is not None and "InductorError" in wrapped.fallback
    assert _equal(out, env.step(state, action))
    wrapped.step(state, action)  # eager from now on, without warning again or retrying


def test_step_raises_errors_that_are_not_the_backends(env):
    wrapped = CompiledStep(env, backend="aot_eager")

    def broken(*args, **kwargs):
        raise ValueError("a bug in the step")

    wrapped.compiled = broken
    with pytest.raises(ValueError, match="a bug in the step"):
        wrapped.step(env.initial_state(2, seed=0), torch.zeros(2, dtype=torch.long))
    assert wrapped.fallback is None


@pytest.mark.slow
def test_training_with_compile_runs_on_cpu(tmp_path):
    torch._dynamo.reset()
    trainer = Trainer(tiny(tmp_path, "compiled", compile=True))
    stats = trainer.run()
    assert trainer.iteration == trainer.cfg.ppo.num_iterations
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())
    assert stats is not None
