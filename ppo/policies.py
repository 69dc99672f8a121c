"""Actor-critic networks over the click observation, and their TorchRL wrapping.

Both networks map observation tensors to ``(logits [B, 2*G*G] float32, value [B, 1] float32)``
with logits in the action coding of docs/design.md: ``index = label * G*G + row * G + col``
(label 0 = foreground, 1 = background). Each names the observation entries it reads in
``in_keys`` (a subset of gpu_env.config's keys, which are also its ``forward`` keyword names).

Input scaling: every image-like entry (RGB, mask, heatmaps, ``sam_prob``, ``gt_error``) is
already in [0, 1], which is what SB3's ``NatureCNN`` sees after dividing uint8 pixels by 255,
so no further scaling is applied. The SAM2 embedding is used as SAM2 produces it, through a
learned 1x1 projection.

Initialisation follows CleanRL's ``layer_init``: orthogonal weights, zero biases, gain sqrt(2)
for hidden layers, 0.01 for the policy head (near-uniform initial policy) and 1.0 for the
value head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict.nn import InteractionType, TensorDictModule, TensorDictSequential
from torch import Tensor, nn
from torchrl.modules import ProbabilisticActor, ValueOperator

from gpu_env.obs_spec import ACTION_MASK, GT_ERROR, IMAGE_EMBEDDING, MASK_PRIOR, OBS, PRIOR_CLICK, entry
from gpu_env.config import EnvConfig
from gpu_env.edt import squared_edt
from ppo.distributions import GeneratorCategorical
from ppo.config import PolicyConfig
from gpu_env.mask_prior import MaskPrior

__all__ = [
    "LOGITS",
    "TRUNK_VALUE",
    "STATE_VALUE",
    "ActorCritic",
    "ProtoCNN",
    "SpatialPolicy",
    "input_dtype",
    "layer_init",
    "make_actor_critic",
    "num_parameters",
]

LOGITS = "logits"  # [B, 2*G*G] float32, written by the shared trunk
TRUNK_VALUE = "trunk_value"  # [B, 1], the trunk's value output, read by the critic head
STATE_VALUE = "state_value"  # [B, 1], TorchRL's (and ClipPPOLoss's) value key

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01
PRIOR_CLICK_UNIT = 4.0  # grid cells: the trunk sees prior_click / 4, about [0, 2] on polyps
VALUE_GAIN = 1.0


def layer_init(layer: nn.Module, gain: float = HIDDEN_GAIN) -> nn.Module:
    """CleanRL's init: orthogonal weight with ``gain``, zero bias. Returns ``layer``."""
    nn.init.orthogonal_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def input_dtype(weight: Tensor) -> torch.dtype:
    """The dtype the network's input planes are concatenated in: autocast's lower precision when
    ``torch.autocast`` is on for ``weight``'s device (a run's ``--autocast bf16``), else the
    parameters' dtype. Casting each plane before the concatenation gives bitwise the values the
    first convolution's own autocast cast would give, on half the bytes, and without a second
    full-size copy (on the 2-core CPU the cast of the 10 x 128 x 128 stem input was ~10 % of a bf16
    update; ``tests/test_policy_autocast.py``)."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _check_planes(name: str, x: Tensor | None, channels: int, size: int | None) -> Tensor:
    """Shape check on metadata only (no host sync); errors say which entry is wrong."""
    if x is None:
        raise ValueError(
            f"the policy was built to read {name!r} but it is missing from the observation; "
            f"enable it in the env config or build the policy without it"
        )
    if x.ndim != 4 or x.shape[1] != channels or (size is not None and x.shape[-2:] != (size, size)):
        want = f"[B, {channels}, {size}, {size}]" if size is not None else f"[B, {channels}, h, w]"
        raise ValueError(f"{name!r} has shape {tuple(x.shape)}, expected {want}")
    return x


class ProtoCNN(nn.Module):
    """The Stable-Baselines3 prototype's network: ``NatureCNN`` + separate linear heads.

    conv 32 8x8/4 -> conv 64 4x4/2 -> conv 64 3x3/1 -> flatten -> linear ``features_dim`` (ReLU
    after each), then ``Linear(features_dim, num_actions)`` logits and ``Linear(features_dim, 1)``
    value, as SB3's ``ActorCriticCnnPolicy`` with a shared extractor and empty ``net_arch``.
    On 6x128x128 with 2048 actions this has 5,852,321 parameters (the 9216 x 512 linear
    layer alone is 4.7M).

    Reads ``observation [B, 6, S, S]``; where ``env`` observes ``gt_error`` (simulated user)
    also ``gt_error [B, 2, S, S]`` (concatenated: 8 channels). Other observation entries are
    ignored. Sizes follow ``env`` (default: the training run's ``EnvConfig()``).
    """

    def __init__(self, env: EnvConfig = EnvConfig(), features_dim: int = 512) -> None:
        num_actions, obs_size = env.num_actions, env.obs_size
        use_gt_error = GT_ERROR in env.observation_keys
        super().__init__()
        side = ((obs_size - 8) // 4 + 1 - 4) // 2 + 1 - 2
        if side < 1:
            raise ValueError(f"obs_size={obs_size} is too small for NatureCNN; need >= 36")
        self.num_actions = num_actions
        self.obs_size = obs_size
        self.use_gt_error = use_gt_error
        self.in_keys = [OBS] + ([GT_ERROR] if use_gt_error else [])
        in_channels = 6 + (2 if use_gt_error else 0)
        self.features = nn.Sequential(
            layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * side * side, features_dim)), nn.ReLU(),
        )
        self.policy_head = layer_init(nn.Linear(features_dim, num_actions), POLICY_GAIN)
        self.value_head = layer_init(nn.Linear(features_dim, 1), VALUE_GAIN)

    def forward(self, observation: Tensor, gt_error: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``[B, 6, S, S]`` (+ ``[B, 2, S, S]``) -> logits ``[B, A]``, value ``[B, 1]``."""
        dtype = input_dtype(self.policy_head.weight)
        x = _check_planes(OBS, observation, 6, self.obs_size).to(dtype)
        if self.use_gt_error:
            x = torch.cat([x, _check_planes(GT_ERROR, gt_error, 2, self.obs_size).to(dtype)], 1)
        h = self.features(x)
        return self.policy_head(h).float(), self.value_head(h).float()


class SpatialPolicy(nn.Module):
    """Fully convolutional policy: a ``[2, G, G]`` logit map and a pooled value head.

    Trunk: two stride-2 3x3 convs (S -> S/2 -> S/4; 128 -> 32 = G by default), pooled to G x G
    if S/4 != G, then the optional SAM2 embedding (area-resized to G x G, then a 1x1
    projection: pooling first is 4x cheaper and equal, both being linear), then 3x3 convs at
    G x G with ``dilations`` (default 1, 2, 4, 8, 1: a receptive field of 33 cells, the whole
    grid). Policy head: 1x1 conv to 2 channels (fg, bg), flattened label-major, which is
    exactly the action coding. Value head: global mean and max pooling -> MLP -> 1.

    Inputs (``in_keys``) follow ``env``'s observation keys (``gpu_env.obs_spec``): the image-like
    ``planes`` entries (``observation``, ``sam_prob``, ``mask_prior``, ``gt_error``) stacked at
    the observation size, ``mask_prior`` as three planes (the prior p and the predicted error
    maps ``p * (1 - mask)`` and ``(1 - p) * mask``; the policy then owns the ``MaskPrior``
    network as ``self.prior``, frozen: its maps are computed once per image by
    ``ppo.prior.attach_prior``, not in this forward); ``prior_click`` at grid resolution beside
    the stem's output; ``image_embedding`` (any float dtype) through its projection.
    Sizes and widths follow ``env`` and ``policy``; the defaults are the training run's
    (``EnvConfig()``, ``PolicyConfig()``: width 16, patch stem, ``sam_prob``, ``mask_prior`` and
    ``prior_click`` inputs), exactly the network ``build_policy`` builds for a default run.
    """

    def __init__(
        self,
        env: EnvConfig = EnvConfig(),
        policy: PolicyConfig = PolicyConfig(),
        *,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
        value_hidden: int = 64,
        embedding_channels: int = 256,
        embedding_proj: int = 16,
    ) -> None:
        super().__init__()
        grid_size, obs_size, width = env.grid_size, env.obs_size, policy.width
        if obs_size < 4 or grid_size < 1 or width < 2:
            raise ValueError(
                f"need obs_size >= 4, grid_size >= 1, width >= 2; "
                f"got {obs_size}, {grid_size}, {width}"
            )
        keys = env.observation_keys
        use_mask_prior = MASK_PRIOR in keys
        use_image_embedding = IMAGE_EMBEDDING in keys
        use_prior_click = PRIOR_CLICK in keys
        self.grid_size = grid_size
        self.obs_size = obs_size
        self.num_actions = 2 * grid_size * grid_size
        # Image-like planes at the observation size, stacked in observation order (obs_spec).
        self.plane_inputs = tuple((e.name, e.channels) for e in map(entry, keys) if e.role == "planes")
        self.use_image_embedding = use_image_embedding
        self.use_mask_prior = use_mask_prior
        self.prior_distance = policy.prior_distance and use_mask_prior
        self.use_prior_click = use_prior_click
        # The residual policy's bias: logits = beta * prior_click + trunk logits, beta learned.
        # At init the trunk's logits are ~0 (policy-head gain 0.01), so the greedy action is the
        # cell of RITM's click on the mask prior, the learned clicker's choice.
        self.prior_click_scale = (nn.Parameter(torch.tensor(float(policy.prior_click_scale)))
                                  if use_prior_click and policy.prior_click_scale else None)
        self.embedding_channels = embedding_channels
        self.prior = None
        if use_mask_prior:
            self.prior = MaskPrior(width=policy.prior_width).requires_grad_(False)
        self.in_keys = [k for k in keys if entry(k).role != "mask"]
        # the mask prior adds its predicted error maps against the mask: two more planes
        in_channels = sum(c for _, c in self.plane_inputs) + 2 * int(use_mask_prior)
        if policy.patch_stem:  # one 4x4/4 conv: ~5x cheaper, the budget choice for CPU training
            self.stem = nn.Sequential(
                layer_init(nn.Conv2d(in_channels, width, 4, stride=4)), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(
                layer_init(nn.Conv2d(in_channels, width // 2, 3, stride=2, padding=1)), nn.ReLU(inplace=True),
                layer_init(nn.Conv2d(width // 2, width, 3, stride=2, padding=1)), nn.ReLU(inplace=True),
            )
        self.embed_proj = (
            nn.Sequential(layer_init(nn.Conv2d(embedding_channels, embedding_proj, 1)), nn.ReLU(inplace=True))
            if use_image_embedding
            else None
        )
        body: list[nn.Module] = []
        channels = (width + (embedding_proj if use_image_embedding else 0)
                    + 2 * int(self.prior_distance) + 2 * int(use_prior_click))
        for d in dilations:
            body += [layer_init(nn.Conv2d(channels, width, 3, padding=d, dilation=d)), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*body)
        self.policy_head = layer_init(nn.Conv2d(channels, 2, 1), POLICY_GAIN)
        self.value_head = nn.Sequential(
            layer_init(nn.Linear(2 * channels, value_hidden)), nn.ReLU(inplace=True),
            layer_init(nn.Linear(value_hidden, 1), VALUE_GAIN),
        )

    def forward(self, observation: Tensor, **inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Observation entries (``in_keys``, by name) -> logits ``[B, 2*G*G]``, value ``[B, 1]``."""
        inputs[OBS] = observation
        mask_prior, prior_click = inputs.get(MASK_PRIOR), inputs.get(PRIOR_CLICK)
        param_dtype = self.policy_head.weight.dtype
        dtype = input_dtype(self.policy_head.weight)
        S, G = self.obs_size, self.grid_size
        planes = []
        for name, channels in self.plane_inputs:
            planes.append(_check_planes(name, inputs.get(name), channels, S))
            if name == MASK_PRIOR:
                p, m = planes[-1], observation[:, 3:4]
                planes += [p * (1 - m), (1 - p) * m]
        x = torch.cat([p.to(dtype) for p in planes], 1) if len(planes) > 1 else planes[0].to(dtype)
        h = self.stem(x)
        if h.shape[-1] != G:  # static: depends on obs_size and grid_size only
            h = F.adaptive_avg_pool2d(h, G)
        if self.use_image_embedding:
            e = _check_planes(IMAGE_EMBEDDING, inputs.get(IMAGE_EMBEDDING), self.embedding_channels, None)
            e = F.adaptive_avg_pool2d(e.to(param_dtype), G)
            h = torch.cat([h, self.embed_proj(e)], 1)
        if self.prior_distance:
            dist = prior_error_distance(mask_prior, observation[:, 3:4], G).to(param_dtype)
            h = torch.cat([h.to(dtype), dist.to(dtype)], 1)
        if self.use_prior_click:
            click = _check_planes(PRIOR_CLICK, prior_click, 2, G)
            h = torch.cat([h.to(dtype), (click.to(param_dtype) * (1.0 / PRIOR_CLICK_UNIT)).to(dtype)], 1)
        h = self.body(h)
        logits = self.policy_head(h).flatten(1)  # [B, 2, G, G] -> label * G*G + row * G + col
        if self.prior_click_scale is not None:
            logits = logits + self.prior_click_scale * click.flatten(1)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], 1)
        return logits.float(), self.value_head(pooled).float()


def prior_error_distance(prior: Tensor, mask: Tensor, grid_size: int) -> Tensor:
    """RITM's distance maps with the mask prior in place of the GT, at grid resolution:
    ``[B, 2, G, G]`` Euclidean distances (in cells, divided by ``G``) of the predicted
    false-negative and false-positive cells (prior > 0.5 vs mask, each area-pooled to the grid and
    thresholded at half a cell) to the nearest correct cell, the border counting as correct.
    Computed from the observation alone (no ground truth); exact EDT, no host read."""
    p = F.adaptive_avg_pool2d((prior > 0.5).float(), grid_size)
    m = F.adaptive_avg_pool2d(mask.float(), grid_size)
    err = torch.cat((p - m > 0.5, m - p > 0.5), 1)  # [B, 2, G, G] fn, fp
    B = err.shape[0]
    padded = F.pad(err.flatten(0, 1), (1, 1, 1, 1), value=False)
    dist = squared_edt(padded)[:, 1:-1, 1:-1].sqrt() / grid_size
    return dist.view(B, 2, grid_size, grid_size)


@dataclass(frozen=True)
class ActorCritic:
    """TorchRL views of one policy network whose single forward gives logits and value.

    - ``actor``: ``ProbabilisticActor``: runs the trunk (writing ``logits`` and
      ``trunk_value``), samples ``action`` and writes ``action_log_prob``.
    - ``critic``: ``ValueOperator`` head copying ``trunk_value`` to ``state_value``; it has no
      parameters and reads what the actor's forward just wrote. In ``ClipPPOLoss`` the actor
      runs first on the minibatch, so actor and critic losses share one trunk forward.
      The trunk must *not* write ``state_value`` itself: the loss reads the rollout's stored
      ``state_value`` as the old value for value clipping after the actor has run.
    - ``policy_value``: actor then critic: one forward for the rollout (action, log-prob,
      ``state_value``).
    - ``value``: trunk then critic: ``state_value`` alone (bootstrap values).
    """

    actor: ProbabilisticActor
    critic: ValueOperator
    policy_value: TensorDictSequential
    value: TensorDictSequential


def make_actor_critic(
    policy: nn.Module,
    *,
    generator: torch.Generator,
    use_action_mask: bool = False,
    default_interaction_type: InteractionType = InteractionType.RANDOM,
) -> ActorCritic:
    """Wrap ``policy`` (``ProtoCNN``/``SpatialPolicy``: ``in_keys`` + ``forward`` -> logits, value).

    Args:
        generator: draws every sampled action (Gumbel-max, see ``ppo.distributions``); must be
            on the policy's device.
        use_action_mask: read ``action_mask`` ``[B, A]`` (True = allowed) from the observation.
        default_interaction_type: RANDOM samples (training rollouts); evaluation can switch to
            the greedy action with ``tensordict.nn.set_interaction_type("deterministic")``.
    """
    try:
        device = next(policy.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the policy is on {device}; create it with "
            f"torch.Generator(device={str(device)!r})"
        )
    trunk = TensorDictModule(
        policy, in_keys={k: k for k in policy.in_keys}, out_keys=[LOGITS, TRUNK_VALUE]
    )
    dist_keys = {"logits": LOGITS, "mask": ACTION_MASK} if use_action_mask else {"logits": LOGITS}
    actor = ProbabilisticActor(
        trunk,
        in_keys=dist_keys,
        distribution_class=GeneratorCategorical,
        distribution_kwargs={"generator": generator},
        return_log_prob=True,
        default_interaction_type=default_interaction_type,
    )
    critic = ValueOperator(nn.Identity(), in_keys=[TRUNK_VALUE], out_keys=[STATE_VALUE])
    return ActorCritic(
        actor=actor,
        critic=critic,
        policy_value=TensorDictSequential(actor, critic),
        value=TensorDictSequential(trunk, critic),
    )


def build_policy(policy: PolicyConfig, env: EnvConfig, seed: int,
                 device: torch.device) -> nn.Module:
    """The configured network, its inputs following the env's ``observation_keys``, initialised
    from ``seed`` without touching the caller's global RNG state (init runs inside
    ``fork_rng``)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        net = SpatialPolicy(env, policy) if policy.kind == "spatial" else ProtoCNN(env)
    return net.to(device)
