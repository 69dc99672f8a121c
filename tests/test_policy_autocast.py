"""bf16 autocast. Under ``torch.autocast`` the policies concatenate their input planes in
autocast's dtype (``ppo.policies.input_dtype``): the same values the first convolution's own
cast gives, so the outputs and gradients are bitwise those of concatenating in fp32 and letting
autocast cast. A run warns when bf16 would be emulated on its CPU."""

from __future__ import annotations

import pytest
import torch

import ppo.policies as policies
from ppo.config import TrainConfig
from ppo.policies import build_policy, input_dtype
from tests.nets import proto


def _inputs(net, b: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    S, G = net.obs_size, net.grid_size if hasattr(net, "grid_size") else None
    planes = {"observation": (b, 6, S, S), "sam_prob": (b, 1, S, S), "mask_prior": (b, 1, S, S),
              "gt_error": (b, 2, S, S), "prior_click": (b, 2, G, G)}
    return {k: torch.rand(planes[k], generator=g) * (4 if k == "prior_click" else 1)
            for k in net.in_keys}


def _forward_backward(net, inputs) -> tuple[torch.Tensor, ...]:
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, value = net(**inputs)
    (logits.logsumexp(1).sum() + value.sum()).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    return (logits.detach(), value.detach(), *grads)


def _main_job_policy():
    cfg = TrainConfig()
    return build_policy(cfg.policy, cfg.env, seed=3, device=torch.device("cpu"))


@pytest.mark.parametrize("make", [_main_job_policy, lambda: proto(obs_size=64, use_gt_error=True)],
                         ids=["spatial_main_job", "proto"])
def test_bf16_inputs_equal_autocasting_fp32_inputs(make, monkeypatch):
    net = make()
    inputs = _inputs(net)
    fast = _forward_backward(net, inputs)
    # the slow reference: planes concatenated in the parameters' dtype (fp32), cast by autocast
    monkeypatch.setattr(policies, "input_dtype", lambda weight: weight.dtype)
    reference = _forward_backward(net, inputs)
    assert len(fast) == len(reference) > 2
    for a, b in zip(fast, reference):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_input_dtype_follows_autocast():
    w = torch.zeros(1)
    assert input_dtype(w) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert input_dtype(w) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert input_dtype(w) == torch.float32


def test_autocast_forward_compiles_whole():
    """``input_dtype`` reads the autocast state inside the traced forward: the policy still
    compiles as one graph (``fullgraph=True``, as ``--compile --autocast bf16`` does on a GPU)
    and gives the eager outputs."""
    net = _main_job_policy()
    inputs = _inputs(net)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = net(**inputs)
        graph = compiled(**inputs)
    torch._dynamo.reset()
    for a, b in zip(eager, graph):
        assert torch.equal(a, b)


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch):
    """``--autocast bf16`` is emulated, and slower than fp32, on a CPU without AVX512-BF16 or
    AMX: the run says so (``ppo.factory.warn_slow_cpu_bf16``, called by ``Trainer``)."""
    from ppo.factory import warn_slow_cpu_bf16

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match=r"--autocast bf16 on a CPU without native bf16"):
        assert warn_slow_cpu_bf16("bf16", cpu)
    assert not warn_slow_cpu_bf16("none", cpu)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert not warn_slow_cpu_bf16("bf16", cpu)
