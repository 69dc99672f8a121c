"""Policies (ppo/policies.py) and their action distribution (ppo/distributions.py)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import set_interaction_type
from torch import nn

from gpu_env.config import PROTOTYPE_ENV
from ppo.distributions import GeneratorCategorical
from ppo.policies import (
    HIDDEN_GAIN,
    POLICY_GAIN,
    VALUE_GAIN,
    make_actor_critic,
    num_parameters,
)
from tests.nets import proto, spatial

CFG = PROTOTYPE_ENV
G, S, A = CFG.grid_size, CFG.obs_size, CFG.num_actions


def _obs(b: int, gen: torch.Generator, **extra: bool) -> TensorDict:
    td = {"observation": torch.rand(b, 6, S, S, generator=gen)}
    if extra.get("sam_prob"):
        td["sam_prob"] = torch.rand(b, 1, S, S, generator=gen)
    if extra.get("gt_error"):
        td["gt_error"] = (torch.rand(b, 2, S, S, generator=gen) > 0.9).float()
    if extra.get("image_embedding"):
        td["image_embedding"] = torch.randn(b, 256, 64, 64, generator=gen).to(torch.bfloat16)
    if extra.get("action_mask"):
        td["action_mask"] = torch.rand(b, A, generator=gen) > 0.5
    return TensorDict(td, [b])


def test_proto_cnn_parameter_count():
    # SB3 NatureCNN on 6x128x128: convs 12,320 + 32,832 + 36,928; flatten 64*12*12 = 9216;
    # linear 9216*512+512 = 4,719,104; policy head 512*2048+2048 = 1,050,624; value head 513.
    assert num_parameters(proto()) == 5_852_321
    assert num_parameters(proto(use_gt_error=True)) == 5_852_321 + 2 * 32 * 8 * 8


def test_spatial_policy_parameter_count():
    assert num_parameters(spatial()) == 56_051
    assert num_parameters(spatial(width=64)) == 213_347
    full = spatial(use_sam_prob=True, use_gt_error=True, use_image_embedding=True)
    assert num_parameters(full) < 500_000


@pytest.mark.parametrize("make", [proto, spatial])
def test_output_shapes(make):
    gen = torch.Generator().manual_seed(0)
    net = make()
    logits, value = net(**_obs(3, gen).to_dict())
    assert logits.shape == (3, A) and value.shape == (3, 1)
    assert logits.dtype == value.dtype == torch.float32
    # near-uniform initial policy (policy head gain 0.01)
    assert logits.abs().max() < 1.0


def _is_scaled_orthogonal(weight: torch.Tensor, gain: float) -> bool:
    m = weight.detach().flatten(1)  # [out, fan_in]; orthogonal_ makes the smaller side orthonormal
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return torch.allclose(gram, gain**2 * torch.eye(gram.shape[0]), atol=1e-5 * max(1.0, gain**2))


@pytest.mark.parametrize("make", [proto, spatial])
def test_cleanrl_initialisation(make):
    """Orthogonal weights scaled by CleanRL's gains, zero biases."""
    net = make()
    heads = {id(net.policy_head.weight): POLICY_GAIN}
    last_value = net.value_head if isinstance(net.value_head, nn.Linear) else net.value_head[-1]
    heads[id(last_value.weight)] = VALUE_GAIN
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) >= 5
    for layer in layers:
        gain = heads.get(id(layer.weight), HIDDEN_GAIN)
        assert _is_scaled_orthogonal(layer.weight, gain), layer
        assert torch.count_nonzero(layer.bias) == 0


def test_spatial_logits_follow_the_action_coding():
    """Logit index = label * G*G + row * G + col, decoded as docs/design.md decodes actions."""
    net = spatial(width=4)
    label, row, col = 1, 5, 27
    feature = torch.zeros(1, 4, G, G)
    feature[0, 0, row, col] = 1.0

    class Fixed(nn.Module):
        def forward(self, x):
            return feature.expand(x.shape[0], -1, -1, -1)

    net.stem, net.body = Fixed(), nn.Identity()
    with torch.no_grad():
        net.policy_head.weight.zero_()
        net.policy_head.weight[label, 0] = 10.0
    logits, _ = net(torch.zeros(2, 6, S, S))
    a = int(logits[0].argmax())
    assert divmod(a, G * G)[0] == label and divmod(a % (G * G), G) == (row, col)
    assert torch.equal(logits.view(2, 2, G, G)[0, label], 10.0 * feature[0, 0])


def test_optional_inputs_are_read():
    gen = torch.Generator().manual_seed(1)
    td = _obs(2, gen, sam_prob=True, gt_error=True, image_embedding=True)
    for key, net in [("sam_prob", spatial(use_sam_prob=True)),
                     ("gt_error", spatial(use_gt_error=True)),
                     ("image_embedding", spatial(use_image_embedding=True)),
                     ("gt_error", proto(use_gt_error=True))]:
        inputs = {k: td[k] for k in net.in_keys}
        changed = dict(inputs, **{key: torch.rand_like(inputs[key].float()).to(inputs[key].dtype)})
        with torch.no_grad():
            assert not torch.allclose(net(**inputs)[0], net(**changed)[0]), key


def test_extra_keys_are_ignored_unless_enabled():
    gen = torch.Generator().manual_seed(2)
    td = _obs(2, gen, sam_prob=True, gt_error=True, image_embedding=True)
    for net in (proto(), spatial()):
        assert net.in_keys == ["observation"]
        ac = make_actor_critic(net, generator=gen)
        with torch.no_grad():
            full = ac.value(td.clone())["state_value"]
            six = ac.value(td.select("observation"))["state_value"]
        assert torch.equal(full, six)


def test_missing_or_misshaped_input_is_named():
    net = spatial(use_sam_prob=True)
    with pytest.raises(ValueError, match="'sam_prob'.*missing"):
        net(torch.zeros(1, 6, S, S))
    with pytest.raises(ValueError, match=r"'observation' has shape \(1, 5, 128, 128\)"):
        net(torch.zeros(1, 5, S, S), sam_prob=torch.zeros(1, 1, S, S))


def test_actor_samples_allowed_actions_with_correct_log_prob():
    gen = torch.Generator().manual_seed(3)
    net = spatial(width=8)
    ac = make_actor_critic(net, generator=gen, use_action_mask=True)
    td = _obs(16, gen, action_mask=True)
    with torch.no_grad():
        out = ac.policy_value(td)
    action, mask = out["action"], out["action_mask"]
    assert action.dtype == torch.int64 and ((0 <= action) & (action < A)).all()
    assert mask.gather(1, action[:, None]).all()
    masked_logits = out["logits"].masked_fill(~mask, float("-inf"))
    expected = masked_logits.log_softmax(-1).gather(1, action[:, None]).squeeze(1)
    assert torch.allclose(out["action_log_prob"], expected, atol=1e-5)
    assert torch.equal(out["state_value"], out["trunk_value"])


def test_sampling_is_reproducible_and_leaves_global_rng_alone():
    net = spatial(width=8)
    td = _obs(8, torch.Generator().manual_seed(4), action_mask=True)
    global_state = torch.get_rng_state()
    actions = []
    for _ in range(2):
        ac = make_actor_critic(net, generator=torch.Generator().manual_seed(123), use_action_mask=True)
        with torch.no_grad():
            actions.append(ac.actor(td.clone())["action"])
    assert torch.equal(actions[0], actions[1])
    assert torch.equal(torch.get_rng_state(), global_state)


def test_deterministic_interaction_is_greedy():
    gen = torch.Generator().manual_seed(5)
    ac = make_actor_critic(spatial(width=8), generator=gen, use_action_mask=True)
    td = _obs(4, gen, action_mask=True)
    with torch.no_grad(), set_interaction_type("deterministic"):
        out = ac.actor(td)
    greedy = out["logits"].masked_fill(~out["action_mask"], float("-inf")).argmax(-1)
    assert torch.equal(out["action"], greedy)


def test_gumbel_sampling_matches_probabilities():
    gen = torch.Generator().manual_seed(6)
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0, 0.5]])
    mask = torch.tensor([[True, True, False, True, True]])
    dist = GeneratorCategorical(logits, mask, generator=gen)
    draws = dist.sample((40_000,)).squeeze(1)
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    probs = logits.masked_fill(~mask, float("-inf")).softmax(-1)[0]
    assert freq[2] == 0
    assert (freq - probs).abs().max() < 0.01


def test_all_masked_row_falls_back_to_unmasked_logits():
    logits = torch.randn(2, 6, requires_grad=True)
    mask = torch.tensor([[False] * 6, [True, False, True, False, False, False]])
    dist = GeneratorCategorical(logits, mask, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(dist.probs[0], logits[0].softmax(-1))  # fallback row
    assert dist.probs[1, 1] == 0 and torch.allclose(dist.probs[1, [0, 2]].sum(), torch.tensor(1.0))
    lp = dist.log_prob(torch.tensor([3, 0]))
    ent = dist.entropy()
    (lp.sum() + ent.sum()).backward()
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    assert torch.isfinite(logits.grad).all() and (logits.grad[1, [1, 3, 4, 5]] == 0).all()


def test_sampling_without_generator_refuses():
    with pytest.raises(RuntimeError, match="needs a torch.Generator"):
        GeneratorCategorical(torch.zeros(1, 3)).sample()


def test_generator_device_must_match_policy():
    class Meta(nn.Module):  # a parameter on a non-CPU device without needing one
        in_keys = ["observation"]

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(1, device="meta"))

    with pytest.raises(ValueError, match="generator is on cpu"):
        make_actor_critic(Meta(), generator=torch.Generator())


def test_constructor_defaults_are_the_training_runs():
    """``SpatialPolicy()``/``ProtoCNN()`` are the networks a default run builds: the same
    inputs and the same parameter shapes as ``build_policy`` from ``TrainConfig()``."""
    from ppo.config import TrainConfig
    from ppo.policies import ProtoCNN, SpatialPolicy, build_policy

    cfg = TrainConfig()
    built = build_policy(cfg.policy, cfg.env, seed=0, device=torch.device("cpu"))
    default = SpatialPolicy()
    assert default.in_keys == built.in_keys == ["observation", "sam_prob", "mask_prior", "prior_click"]
    assert {k: v.shape for k, v in default.state_dict().items()} == \
        {k: v.shape for k, v in built.state_dict().items()}
    assert float(default.prior_click_scale) == cfg.policy.prior_click_scale
    assert ProtoCNN().num_actions == cfg.env.num_actions and ProtoCNN().obs_size == cfg.env.obs_size
