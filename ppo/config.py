"""The one typed configuration of a training run; ``scripts/train.py`` exposes it on the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

from gpu_env.config import EnvConfig


ABSENT_MEANS = {"mask_prior": False, "prior_distance": False}
"""Settings added after runs were saved, with the value that reproduces a run saved before them
(runs before the mask prior had none)."""


@dataclass
class TrainConfig:
    """PPO on the batched click environment (CleanRL-style settings)."""

    # --- run
    exp_name: str = "ppo_click"
    """Name of the run; outputs go to ``{out_dir}/{exp_name}``."""
    out_dir: str = "runs"
    """Parent folder of run folders."""
    seed: int = 1
    """Seeds the env rows, the policy initialisation and the sampling generator."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``."""
    resume: str | None = None
    """Checkpoint to resume from (e.g. ``runs/ppo_click/last.pt``): continues bit-identically."""

    # --- data and segmenter
    dataset: str = "synthetic"
    """``synthetic``, ``kvasir:<folder>`` or an image/mask folder."""
    train_split: str = "train"
    """Split the agent trains on."""
    eval_split: str = "val"
    """Held-out split for evaluation."""
    train_images: int = 1024
    """Number of synthetic training images (ignored for folders). The generator is cheap
    (~14 s per 1,024 frames on 2 CPU cores) and the mask prior needs the variety."""
    augment_copies: int = 0
    """Augmented copies of each training image (flip, 90-degree rotation, zoom and colour
    jitter on image and mask together; ``gpu_env.datasets.augment``), each its own image with its
    own GT; the held-out split is never augmented. With ``segmenter=sam2`` the feature cache must
    be built with the same ``--augment-copies``/``--augment-seed`` (``scripts.embed``)."""
    augment_seed: int = 0
    """Seed of the augmentation parameters (deterministic per seed and image id)."""
    eval_images: int = 64
    """Number of held-out images evaluated (the first ones of ``eval_split``)."""
    image_size: int = 256
    """Working size of dataset images kept on the device."""
    segmenter: Literal["weightfree", "sam2"] = "weightfree"
    """``weightfree`` (classical, no checkpoint) or ``sam2`` (needs a feature cache)."""
    sam2_config: str = "sam2.1_hiera_b+"
    """SAM2.1 config name (sam2 package)."""
    sam2_checkpoint: str | None = None
    """Local SAM2 checkpoint; None = random weights (benchmarks only)."""
    sam2_seed: int = 0
    """Seed of random SAM2 weights (only without a checkpoint; must match the cache's)."""
    sam2_image_size: int | None = None
    """Override of SAM2's input size (small random-weight models; must match the cache's)."""
    feature_cache: str | None = None
    """Feature cache directory made by ``scripts.embed`` (per split; ``{split}`` is replaced)."""
    shard_data: bool = False
    """Multi-process runs: rank r trains on images r::world_size only and loads only their
    features (for training sets larger than one GPU's memory); off: every rank holds them all."""

    # --- environment
    grid_size: int = 32
    """Click grid side (actions = 2 * grid_size**2)."""
    max_clicks: int = 5
    """Agent clicks per episode after the initial user click."""
    obs_size: int = 128
    """Observation side."""
    boundary_weight: float = 0.5
    """lambda of the boundary term in the reward."""
    boundary_metric: Literal["fscore", "biou"] = "fscore"
    """Boundary F-score or Boundary IoU."""
    mode: Literal["auto", "simulated_user"] = "auto"
    """``auto``: no GT in the observation; ``simulated_user``: GT error maps observed."""
    action_mask: bool = True
    """Mask already-clicked cells (and, in simulated-user mode, label-inconsistent ones)."""
    obs_sam_prob: bool = True
    """Give the policy the segmenter's probability map."""
    obs_image_embedding: bool = False
    """Give the policy the cached SAM2 image embedding (SAM2 segmenter only)."""
    use_mask_input: bool = True
    """Feed previous logits back to the segmenter as mask input."""

    # --- policy
    policy: Literal["spatial", "proto"] = "spatial"
    """``spatial`` (fully convolutional logit map) or ``proto`` (prototype-sized CNN)."""
    width: int = 16
    """Base channel width of the spatial policy."""
    patch_stem: bool = True
    """Spatial policy stem: one 4x4/4 conv (cheap, CPU default) instead of two 3x3/2 convs."""
    mask_prior: bool = True
    """Pre-train a mask prior (a small U-Net segmenting the image alone, supervised by the
    training split's GT masks) before PPO and give the spatial policy its map of each image
    (observation key ``mask_prior``); the same network drives the "learned clicker" baseline.
    The actor still sees no ground truth."""
    prior_steps: int = 1200
    """Supervised updates (minibatches of 32) of the mask prior before PPO."""
    prior_width: int = 16
    """Base channel width of the mask prior U-Net (16: 0.49M parameters)."""
    prior_distance: bool = False
    """Also give the policy, at grid resolution, the distance of each predicted error cell
    (prior vs mask) to the nearest correct cell: RITM's click signal with the prior as GT."""

    # --- PPO
    total_timesteps: int = 51_200
    """Environment steps (agent clicks) in total."""
    num_envs: int = 64
    """Parallel episodes B."""
    num_steps: int = 10
    """Rollout length T per iteration (batch = T * B)."""
    learning_rate: float = 1e-3
    """Adam learning rate (the prototype used 2.5e-4: too slow for the CPU budget)."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0."""
    gamma: float = 0.5
    """Discount. Low on purpose: a click's effect shows in its own reward, and at 0.99 the
    advantage is dominated by the noise of later clicks (measured; see the issue note)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 4
    """Minibatches per epoch."""
    update_epochs: int = 4
    """Epochs over each rollout."""
    clip_coef: float = 0.1
    """PPO clip epsilon (the prototype's)."""
    clip_vloss: bool = True
    """Clip the value loss (CleanRL)."""
    ent_coef: float = 0.02
    """Entropy bonus coefficient (the prototype's)."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    bc_steps: int = 0
    """Behaviour-cloning warm-start updates imitating the oracle's grid clicks before PPO."""
    bc_lr: float = 1e-3
    """Learning rate of the behaviour-cloning warm start."""

    # --- logging, checkpoints, evaluation
    log_every: int = 5
    """Iterations between host reads of the device-side statistics."""
    checkpoint_every: int = 20
    """Iterations between periodic checkpoints."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (last.pt and best.pt are always kept)."""
    eval_every: int = 20
    """Iterations between quick evaluations (greedy agent, ``max_clicks`` clicks, the held-out
    images; checked at checkpoint iterations and at the end) selecting ``best.pt`` by mean final
    Dice and logging rendered episodes to TensorBoard. 0: none, and no ``best.pt`` is written."""
    eval_clicks: int = 20
    """Clicks per evaluation episode (NoC needs 20)."""
    tensorboard: bool = True
    """Write TensorBoard event files next to the CSV log."""
    progress: bool = True
    """Show a progress bar."""

    # --- speed
    compile: bool = False
    """``torch.compile(fullgraph=True)`` the policy forward and the env step."""
    autocast: Literal["none", "bf16"] = "none"
    """Mixed precision of the segmenter decode and policy forward (GPU)."""

    def env_config(self) -> EnvConfig:
        return EnvConfig(
            grid_size=self.grid_size, max_clicks=self.max_clicks, obs_size=self.obs_size,
            boundary_weight=self.boundary_weight, boundary_metric=self.boundary_metric,
            mode=self.mode, action_mask=self.action_mask, obs_sam_prob=self.obs_sam_prob,
            obs_mask_prior=self.mask_prior,
            obs_image_embedding=self.obs_image_embedding, use_mask_input=self.use_mask_input,
        )

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)

    def validate(self) -> None:
        """Reject inconsistent settings with a message naming the field."""
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"num_envs * num_steps = {self.batch_size} must be divisible by "
                f"num_minibatches = {self.num_minibatches}."
            )
        for name in ("num_envs", "num_steps", "total_timesteps", "update_epochs", "max_clicks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.mask_prior and self.policy != "spatial":
            raise ValueError("mask_prior=True needs policy='spatial' (pass --no-mask-prior for "
                             "the prototype network).")
        if self.prior_steps < 0:
            raise ValueError(f"prior_steps must be >= 0, got {self.prior_steps}.")
        if self.obs_image_embedding and self.segmenter != "sam2":
            raise ValueError("obs_image_embedding=True needs segmenter='sam2'.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config saved in a run's ``config.json`` / checkpoint. Fields added since a run
        was saved take the value that reproduces that run (``ABSENT_MEANS``), not today's
        default."""
        d = {**ABSENT_MEANS, **d}
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)
