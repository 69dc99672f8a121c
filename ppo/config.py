"""The one typed configuration of a training run, composed of sections each consumer takes.

``TrainConfig`` = ``data`` (``gpu_env.datasets.config.DataConfig``), ``segmenter``
(``sam_batch.config.SegmenterConfig``), ``env`` (``gpu_env.config.EnvConfig``), ``policy``
(``PolicyConfig``), ``ppo`` (``PPOConfig``) and ``run`` (``RunConfig``). Every setting is declared
once, in its section, with one default and one docstring; ``sam2click-train`` exposes each as a
flat flag (``--boundary-weight``, not ``--env.boundary-weight``: the names are unique across the
sections, so a flat flag is unambiguous, and the flags of runs documented before the sections
keep working). A setting a section shares with another command is declared in a small shared
section that the training section inherits (``MaskPriorConfig`` here; ``ImagesConfig``,
``SAM2ModelConfig`` and ``ppo.command_options``' ``DeviceConfig``, ``OverwriteConfig`` and
``ProgressConfig``), so each saved section stays a flat dict. Saved configs are nested dicts;
``migrate`` reads the flat dicts of older runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Annotated, Any, Literal

import tyro

from gpu_env.obs_spec import ACTION_MASK, GT_ERROR, IMAGE_EMBEDDING, OBS, OBSERVATION, SAM_PROB, entry
from gpu_env.config import EnvConfig
from gpu_env.datasets.config import DataConfig
from ppo.command_options import DeviceConfig, OverwriteConfig, ProgressConfig
from sam_batch.config import SegmenterConfig


@dataclass(frozen=True)
class MaskPriorConfig:
    """The mask prior: a small U-Net of the image alone (``ppo.prior.MaskPrior``), supervised by
    the training split's GT masks; the policy's input in training, the learned clicker's network
    in ``sam2click-baselines``."""

    prior_steps: int = 1200
    """Training steps (minibatches of 32 images) of the mask prior on the training split, before
    PPO. In sam2click-baselines, 0 leaves out the learned-clicker row."""
    prior_width: int = 16
    """Channels of the mask prior's first layer (16: 0.49M parameters)."""


POLICY_KEYS: dict[str, frozenset[str]] = {
    "spatial": frozenset(e.name for e in OBSERVATION),
    "proto": frozenset({OBS, SAM_PROB, IMAGE_EMBEDDING, GT_ERROR, ACTION_MASK}),
}
"""The observation keys each policy kind can be given (``ppo.policies.build_policy`` builds its
inputs from the env's ``observation_keys``). The spatial policy reads them all; the prototype
network reads ``observation`` and ``gt_error`` (its actor the ``action_mask``) and ignores
``sam_prob`` and ``image_embedding``; it has no input for ``mask_prior``/``prior_click``, so a
run that would pre-train a prior it never sees is refused."""


@dataclass(frozen=True)
class PolicyConfig(MaskPriorConfig):
    """The actor-critic network (its inputs follow from the env section's observation keys;
    the mask prior's size is ``MaskPriorConfig``'s)."""

    kind: Annotated[Literal["spatial", "proto"], tyro.conf.arg(name="policy")] = "spatial"
    """spatial: a fully convolutional network scoring every grid cell; proto: a small CNN the
    size of the original prototype's."""
    width: int = 16
    """Channels of the spatial policy's first layer."""
    patch_stem: bool = True
    """Start the spatial policy with one 4x4 stride-4 convolution (cheaper on a CPU) instead of
    two 3x3 stride-2 ones."""
    prior_distance: bool = False
    """Also give the policy each grid cell's distance to where the mask and the mask prior
    agree."""
    # logits = beta * prior_click + trunk logits, beta learned
    prior_click_scale: float = 2.0
    """Starting weight of the prior_click map added to the policy's click scores: at the start
    the agent clicks where the learned clicker would, and PPO learns where to differ. 0: the map
    is only an input."""

    @property
    def accepted_keys(self) -> frozenset[str]:
        """The observation keys this kind of policy can be given (``POLICY_KEYS``)."""
        return POLICY_KEYS[self.kind]


@dataclass(frozen=True)
class PPOConfig:
    """PPO: rollout sizes and the CleanRL-style update (the values the click agent trains with)."""

    # 120 iterations of 640 steps; docs/results/ablation.md compares shorter runs
    total_timesteps: int = 76_800
    """Environment steps (agent clicks, summed over the parallel episodes) of the whole run."""
    num_envs: int = 64
    """Episodes run in parallel."""
    num_steps: int = 10
    """Steps of each episode per iteration; an iteration collects num_envs x num_steps steps."""
    # the prototype's 2.5e-4 learns too slowly for a CPU budget
    learning_rate: float = 1e-3
    """Adam learning rate at the first iteration."""
    anneal_lr: bool = True
    """Lower the learning rate linearly to 0 over the run."""
    # low on purpose: a click's effect shows in its own reward; at 0.99 the noise of later
    # clicks dominates the advantage
    gamma: float = 0.5
    """Discount factor of future rewards."""
    gae_lambda: float = 0.95
    """Lambda of generalised advantage estimation."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide num_envs x num_steps."""
    update_epochs: int = 4
    """Passes over each iteration's steps."""
    clip_coef: float = 0.1
    """PPO's clipping range of the probability ratio (and of the value update, with
    --clip-vloss)."""
    clip_vloss: bool = True
    """Clip the value update around the values seen in the rollout."""
    ent_coef: float = 0.02
    """Weight of the entropy bonus in the loss."""
    vf_coef: float = 0.5
    """Weight of the value loss (half the mean squared error) in the loss."""
    norm_adv: bool = True
    """Standardise advantages per minibatch."""
    max_grad_norm: float = 0.5
    """Largest gradient norm of an update; larger gradients are scaled down."""
    bc_steps: int = 0
    """Updates that imitate the oracle clicker's clicks before PPO starts (0: none)."""
    bc_lr: float = 1e-3
    """Learning rate of the behaviour-cloning warm start."""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)


@dataclass(frozen=True)
class RunConfig(DeviceConfig, OverwriteConfig, ProgressConfig):
    """Naming, device, logging, checkpoints, evaluation during training, speed (``device``,
    ``overwrite`` and ``progress`` are the settings every command shares,
    ``ppo.command_options``; inherited, so the saved ``run`` section stays flat)."""

    exp_name: str = "ppo_click"
    """Name of the run: its files go to <out-dir>/<exp-name>."""
    out_dir: str = "runs"
    """Folder that holds the run folders, relative to the working directory."""
    seed: int = 1
    """Seed of the episodes, the policy's initial weights and the action sampling."""
    resume: str | None = None
    """Checkpoint to continue from, e.g. runs/ppo_click/last.pt; the run continues exactly as
    if it had not stopped. Settings that shape the model, env, data or optimizer must match the
    checkpoint's."""
    log_every: int = 5
    """Iterations between log lines (progress.csv, TensorBoard)."""
    checkpoint_every: int = 20
    """Iterations between checkpoints."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept; last.pt and best.pt are always kept."""
    eval_every: int = 20
    """Iterations between quick evaluations on the held-out images, which pick best.pt (by mean
    final Dice) and draw episodes to TensorBoard. 0: none, and no best.pt."""
    eval_clicks: int = 20
    """Clicks per episode of the evaluation after training; NoC@85 and NoC@90 count up to this
    many."""
    tensorboard: bool = True
    """Write TensorBoard logs beside progress.csv."""
    compile: bool = False
    """Compile the policy and the env step with torch.compile."""
    # Covers SAM2 decode and the policy's forward and backward; parameters, optimizer, rewards,
    # metrics and evaluation stay fp32, the weight-free segmenter decodes in fp32.
    # docs/results/bf16_* compare the agents it trains with fp32 ones.
    autocast: Literal["none", "bf16"] = "none"
    """bf16: train (rollout and PPO update) in bfloat16, for GPUs and CPUs with native bf16
    (AVX512-BF16 or AMX); other CPUs emulate it, slower than fp32, and the run warns. none:
    fp32."""


SECTIONS: dict[str, type] = {"data": DataConfig, "segmenter": SegmenterConfig, "env": EnvConfig,
                             "policy": PolicyConfig, "ppo": PPOConfig, "run": RunConfig}

RENAMED = {"segmenter": "kind", "policy": "kind", "mask_prior": "obs_mask_prior"}
"""Flat names of runs saved before the sections whose field is named otherwise in its section."""

ABSENT_MEANS = {"env.obs_mask_prior": False, "policy.prior_distance": False,
                "env.obs_prior_click": False}
"""Settings added after runs were saved, with the value that reproduces a run saved before them
(runs before the mask prior had none)."""


@dataclass(frozen=True)
class TrainConfig:
    """PPO on the batched click environment (CleanRL-style settings)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Which images the agent trains and is evaluated on."""
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    """The segmenter each click is given to: weight-free, or SAM2 on precomputed features."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The episodes: clicks, reward, what the agent observes (docs/design.md)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The agent's network and the mask prior it starts from."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """How much is collected per iteration and how PPO updates on it."""
    run: RunConfig = field(default_factory=RunConfig)
    """Where the run's files go, the device, checkpoints, logging and evaluation."""

    def validate(self) -> None:
        """Reject inconsistent settings with a message naming the field."""
        ppo = self.ppo
        if ppo.num_minibatches < 1:
            raise ValueError(
                f"num_minibatches must be >= 1 (minibatches per PPO epoch), got "
                f"{ppo.num_minibatches}; pass e.g. --num-minibatches 4 (a divisor of "
                f"num_envs * num_steps = {ppo.batch_size}).")
        if ppo.batch_size % ppo.num_minibatches:
            raise ValueError(
                f"num_envs * num_steps = {ppo.batch_size} must be divisible by "
                f"num_minibatches = {ppo.num_minibatches}."
            )
        for section, name in (("ppo", "num_envs"), ("ppo", "num_steps"),
                              ("ppo", "total_timesteps"), ("ppo", "update_epochs"),
                              ("env", "max_clicks")):
            if getattr(getattr(self, section), name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(getattr(self, section), name)}.")
        keys = self.env.observation_keys
        refused = [k for k in keys if k not in self.policy.accepted_keys]
        if refused:
            raise ValueError(
                f"policy={self.policy.kind!r} has no input for the observation key(s) "
                f"{', '.join(refused)} that the env settings add; pass {entry(refused[0]).without_flag} "
                f"(or --policy spatial, which reads every key).")
        if self.policy.prior_steps < 0:
            raise ValueError(f"prior_steps must be >= 0, got {self.policy.prior_steps}.")
        if IMAGE_EMBEDDING in keys and self.segmenter.kind != "sam2":
            raise ValueError(
                f"the {IMAGE_EMBEDDING} observation key needs segmenter='sam2' (SAM2's cached "
                f"image embedding), got segmenter={self.segmenter.kind!r}; pass --segmenter sam2 "
                f"or {entry(IMAGE_EMBEDDING).without_flag}.")

    @classmethod
    def from_cli(cls, args: list[str] | None = None, description: str | None = None) -> "TrainConfig":
        """The config of a command line: one flat flag per setting (``--boundary-weight``), its
        help grouped by section."""
        return tyro.cli(tyro.conf.OmitArgPrefixes[cls], args=args, description=description)

    def replace(self, **flat: Any) -> "TrainConfig":
        """A copy with settings changed by their flat names (``cfg.replace(seed=2)``)."""
        nested = self.to_dict()
        for name, value in flat.items():
            section, field_name = _home(name)
            nested[section][field_name] = value
        return TrainConfig.from_dict(nested)

    def to_dict(self) -> dict:
        """The nested dict saved in ``config.json`` and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config saved in a run's ``config.json`` / checkpoint, nested or (older runs) flat,
        through ``migrate``."""
        nested = migrate(d)
        return cls(**{name: SECTIONS[name](**values) for name, values in nested.items()})


def _home(name: str) -> tuple[str, str]:
    """``(section, field)`` of a flat setting name (today's or a renamed one)."""
    field_name = RENAMED.get(name, name)
    if name in ("segmenter", "policy"):
        return name, "kind"
    for section, cls in SECTIONS.items():
        if field_name in {f.name for f in fields(cls)}:
            return section, field_name
    raise ValueError(f"unknown TrainConfig setting {name!r}")


def migrate(d: dict) -> dict:
    """The one migration of saved configs: a nested dict ``{section: {field: value}}`` with
    every section present, from either a nested dict or the flat dict of a run saved before the
    sections. Settings a saved run lacks take the value that reproduces it (``ABSENT_MEANS``);
    an unknown name raises ``ValueError`` naming it."""
    flat_saved = not any(isinstance(d.get(s), dict) for s in SECTIONS)
    nested: dict[str, dict] = {s: {} for s in SECTIONS}
    if flat_saved:
        for name, value in d.items():
            section, field_name = _home(name)
            nested[section][field_name] = value
    else:
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown TrainConfig sections {sorted(unknown)}")
        for section, values in d.items():
            values = asdict(values) if is_dataclass(values) else dict(values)
            names = {f.name for f in fields(SECTIONS[section])}
            bad = set(values) - names
            if bad:
                raise ValueError(f"unknown {section} settings {sorted(bad)}")
            nested[section].update(values)
    for path, value in ABSENT_MEANS.items():
        section, name = path.split(".")
        nested[section].setdefault(name, value)
    return nested
