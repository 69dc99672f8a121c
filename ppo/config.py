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

from gpu_env.config import (ACTION_MASK, GT_ERROR, IMAGE_EMBEDDING, MASK_PRIOR, OBS, PRIOR_CLICK,
                            SAM_PROB, EnvConfig, flag_without)
from gpu_env.datasets.config import DataConfig
from ppo.command_options import DeviceConfig, OverwriteConfig, ProgressConfig
from sam_batch.config import SegmenterConfig


@dataclass(frozen=True)
class MaskPriorConfig:
    """The mask prior: a small U-Net of the image alone (``ppo.prior.MaskPrior``), supervised by
    the training split's GT masks; the policy's input in training, the learned clicker's network
    in ``sam2click-baselines``."""

    prior_steps: int = 1200
    """Supervised updates (minibatches of 32) of the mask prior on the training split: before
    PPO in training; in ``sam2click-baselines`` 0 means no learned-clicker row."""
    prior_width: int = 16
    """Base channel width of the mask prior U-Net (16: 0.49M parameters)."""


POLICY_KEYS: dict[str, frozenset[str]] = {
    "spatial": frozenset({OBS, SAM_PROB, IMAGE_EMBEDDING, MASK_PRIOR, PRIOR_CLICK, GT_ERROR,
                          ACTION_MASK}),
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
    """``spatial`` (fully convolutional logit map) or ``proto`` (prototype-sized CNN)."""
    width: int = 16
    """Base channel width of the spatial policy."""
    patch_stem: bool = True
    """Spatial policy stem: one 4x4/4 conv (cheap, CPU default) instead of two 3x3/2 convs."""
    prior_distance: bool = False
    """Also give the policy, at grid resolution, the distance of each predicted error cell
    (prior vs mask) to the nearest correct cell: RITM's click signal with the prior as GT."""
    prior_click_scale: float = 2.0
    """With the env's ``prior_click`` observation: the initial beta of the actor's residual
    bias ``logits = beta * prior_click + trunk logits`` (beta is learned; ``prior_click`` in grid
    cells). The initial greedy action is then the learned clicker's cell, and PPO learns where to
    differ from it. 0: no bias, the map is only a trunk input."""

    @property
    def accepted_keys(self) -> frozenset[str]:
        """The observation keys this kind of policy can be given (``POLICY_KEYS``)."""
        return POLICY_KEYS[self.kind]


@dataclass(frozen=True)
class PPOConfig:
    """PPO: rollout sizes and the CleanRL-style update (the values the click agent trains with)."""

    total_timesteps: int = 76_800
    """Environment steps (agent clicks) in total (76,800: 120 iterations, ~11 minutes of the
    main job on 2 CPU cores; 51,200 gave NoC@85 -5.06 instead of -5.50 on seed 1,
    docs/results/ablation.md)."""
    num_envs: int = 64
    """Parallel episodes B."""
    num_steps: int = 10
    """Rollout length T per iteration (batch = T * B)."""
    learning_rate: float = 1e-3
    """Adam learning rate at iteration 0 (the prototype used 2.5e-4: too slow for the CPU budget)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run (see ``ppo.loss.lr_at``)."""
    gamma: float = 0.5
    """Discount. Low on purpose: a click's effect shows in its own reward, and at 0.99 the
    advantage is dominated by the noise of later clicks (measured)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide the rollout size T * B."""
    update_epochs: int = 4
    """Epochs over each rollout."""
    clip_coef: float = 0.1
    """PPO clip epsilon, the prototype's (also the value clipping range when ``clip_vloss``)."""
    clip_vloss: bool = True
    """Clip the value update around the rollout's values, as CleanRL does."""
    ent_coef: float = 0.02
    """Entropy bonus coefficient (the prototype's)."""
    vf_coef: float = 0.5
    """Value loss coefficient, applied to CleanRL's ``0.5 * mse``."""
    norm_adv: bool = True
    """Standardise advantages per minibatch."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip (PPO and the behaviour-cloning warm start)."""
    bc_steps: int = 0
    """Behaviour-cloning warm-start updates imitating the oracle's grid clicks before PPO."""
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
    """Name of the run; outputs go to ``{out_dir}/{exp_name}``."""
    out_dir: str = "runs"
    """Parent folder of run folders."""
    seed: int = 1
    """Seeds the env rows, the policy initialisation and the sampling generator."""
    resume: str | None = None
    """Checkpoint to resume from (e.g. ``runs/ppo_click/last.pt``): continues bit-identically.
    Settings that shape the model, env, data or optimizer must match the checkpoint's."""
    log_every: int = 5
    """Iterations between host reads of the device-side statistics."""
    checkpoint_every: int = 20
    """Iterations between periodic checkpoints."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (last.pt and best.pt are always kept)."""
    eval_every: int = 20
    """Iterations between quick evaluations (greedy agent, ``max_clicks`` clicks, the held-out
    images; run at checkpoint iterations that are multiples of it, and at the end) selecting
    ``best.pt`` by mean final Dice and logging rendered episodes to TensorBoard. 0: none, and no
    ``best.pt`` is written."""
    eval_clicks: int = 20
    """Clicks per episode of the evaluation after training (NoC needs 20)."""
    tensorboard: bool = True
    """Write TensorBoard event files next to the CSV log."""
    compile: bool = False
    """``torch.compile(fullgraph=True)`` the policy forward and the env step."""
    autocast: Literal["none", "bf16"] = "none"
    """bf16 autocast of training's rollout and PPO update (SAM2 decode, policy forward and
    backward; parameters, optimizer, rewards and metrics stay fp32; the weight-free segmenter
    always decodes in fp32; evaluation runs in fp32). For GPUs, and for CPUs with native bf16
    (AVX512-BF16 or AMX): 1.4x the main job's PPO iterations on the 2-core AMD EPYC, but the
    agent it trains is 0.02-0.03 Dice lower at 5 clicks on held-out frames over three seeds
    (README, "Throughput on the 2-core CPU"). On other CPUs bf16 is emulated and slower than
    fp32; the run warns."""


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
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunConfig = field(default_factory=RunConfig)

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
                f"{', '.join(refused)} that the env settings add; pass {flag_without(refused[0])} "
                f"(or --policy spatial, which reads every key).")
        if self.policy.prior_steps < 0:
            raise ValueError(f"prior_steps must be >= 0, got {self.policy.prior_steps}.")
        if IMAGE_EMBEDDING in keys and self.segmenter.kind != "sam2":
            raise ValueError(
                f"the {IMAGE_EMBEDDING} observation key needs segmenter='sam2' (SAM2's cached "
                f"image embedding), got segmenter={self.segmenter.kind!r}; pass --segmenter sam2 "
                f"or {flag_without(IMAGE_EMBEDDING)}.")

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
