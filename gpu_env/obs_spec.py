"""The observation, declared once: each entry's name, shape, dtype, bounds and meaning.

Everything that reads or describes observations follows from ``OBSERVATION``:

- ``EnvConfig.observation_keys``: the keys an env config turns on, in this order;
- ``ClickEnv.observe``: computes exactly those keys (and checks their shapes in tests);
- the TorchRL specs (``gpu_env.torchrl_env``), the Gymnasium spaces of the single and vector
  envs (``gpu_env.gym_spaces``) and the Stable-Baselines3 adapter;
- the policies' inputs (``ppo.policies``: an entry's ``role`` says how a network takes it, its
  shape how many channels).

Adding an observation key is one ``ObsEntry`` here plus the code that computes it in
``ClickEnv.observe``.

Shapes are per episode (no batch dimension) and depend on the env config: ``S`` is
``obs_size``, ``G`` is ``grid_size``; the SAM2 image embedding's shape is the segmenter's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal, Protocol

import torch

__all__ = ["ACTION_MASK", "GT_ERROR", "IMAGE_EMBEDDING", "MASK_PRIOR", "OBS", "OBSERVATION",
           "PRIOR_CLICK", "SAM_PROB", "ObsEntry", "ObsField", "entry", "env_fields", "observation_fields",
           "observation_keys"]

OBS = "observation"
SAM_PROB = "sam_prob"
IMAGE_EMBEDDING = "image_embedding"
MASK_PRIOR = "mask_prior"
PRIOR_CLICK = "prior_click"
GT_ERROR = "gt_error"
ACTION_MASK = "action_mask"


class _EnvSettings(Protocol):  # the EnvConfig fields the spec reads (gpu_env.config imports this)
    grid_size: int
    obs_size: int
    mode: str
    obs_sam_prob: bool
    obs_image_embedding: bool
    obs_mask_prior: bool
    obs_prior_click: bool
    action_mask: bool


Role = Literal["planes", "grid", "embedding", "mask"]


@dataclass(frozen=True)
class ObsEntry:
    """One observation key.

    ``role``: how a policy takes it: ``planes`` are image-like maps at the observation size,
    stacked as input channels; ``grid`` maps are per action cell (``[C, G, G]``); ``embedding``
    is a feature map of its own size; ``mask`` is the action mask (not a network input).
    ``image``: the values are an image in [0, 1] (Gymnasium carries them as ``uint8``, 0..255).
    """

    name: str
    meaning: str
    role: Role
    channels: int
    dtype: torch.dtype
    low: float
    high: float | Callable[[_EnvSettings], float]
    enabled: Callable[[_EnvSettings], bool]
    without_flag: str | None = None
    """The training flag that removes the key (None: always observed)."""
    image: bool = False
    reads_gt: bool = False
    """Derived from the episode's ground truth (only observed in simulated-user mode)."""

    def shape(self, cfg: _EnvSettings, embedding_shape: tuple[int, ...] | None = None
              ) -> tuple[int, ...]:
        """Per-episode shape under ``cfg`` (``embedding_shape``: the segmenter's ``[C, h, w]``)."""
        if self.role == "planes":
            return (self.channels, cfg.obs_size, cfg.obs_size)
        if self.role == "grid":
            return (self.channels, cfg.grid_size, cfg.grid_size)
        if self.role == "mask":
            return (self.channels * cfg.grid_size * cfg.grid_size,)
        if embedding_shape is None:
            raise ValueError(f"the shape of {self.name!r} is the segmenter's image embedding; "
                             f"pass embedding_shape=(C, h, w).")
        return tuple(embedding_shape)

    def upper(self, cfg: _EnvSettings) -> float:
        return self.high(cfg) if callable(self.high) else self.high


OBSERVATION: tuple[ObsEntry, ...] = (
    ObsEntry(OBS, "RGB in [0, 1], the current binary mask, foreground and background click "
             "heatmaps (Gaussians of heatmap_sigma observation pixels)", "planes", 6,
             torch.float32, 0.0, 1.0, lambda c: True, image=True),
    ObsEntry(SAM_PROB, "the segmenter's probability map (sigmoid of its low-res logits, "
             "area-resized)", "planes", 1, torch.float32, 0.0, 1.0, lambda c: c.obs_sam_prob,
             "--no-obs-sam-prob", image=True),
    ObsEntry(IMAGE_EMBEDDING, "the cached SAM2 image embedding of the episode's image (SAM2 "
             "segmenter only)", "embedding", 0, torch.float16, float("-inf"), float("inf"),
             lambda c: c.obs_image_embedding, "--no-obs-image-embedding"),
    ObsEntry(MASK_PRIOR, "the mask prior's probability map of the image (a network of the image "
             "alone)", "planes", 1, torch.float32, 0.0, 1.0, lambda c: c.obs_mask_prior,
             "--no-mask-prior", image=True),
    ObsEntry(PRIOR_CLICK, "per action cell and label (fg, bg), RITM's click signal with the mask "
             "prior in place of the GT: the distance in cells of the cell's predicted-error pixels "
             "to the nearest pixel where prior and mask agree", "grid", 2, torch.float32, 0.0,
             lambda c: float(c.grid_size), lambda c: c.obs_prior_click and c.obs_mask_prior,
             "--no-obs-prior-click"),
    ObsEntry(GT_ERROR, "false-negative and false-positive maps of the current mask against the "
             "GT (simulated user only)", "planes", 2, torch.float32, 0.0, 1.0,
             lambda c: c.mode == "simulated_user", "--mode auto", image=True, reads_gt=True),
    ObsEntry(ACTION_MASK, "True where the action is allowed: no click on an already clicked "
             "cell (simulated user: also label-consistent clicks only)", "mask", 2, torch.bool,
             0, 1, lambda c: c.action_mask, "--no-action-mask"),
)
"""Every observation key, in the order observations hold them."""


@dataclass(frozen=True)
class ObsField:
    """An ``ObsEntry`` resolved under one env config: concrete shape and upper bound."""

    entry: ObsEntry
    shape: tuple[int, ...]
    high: float

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def dtype(self) -> torch.dtype:
        return self.entry.dtype

    @property
    def low(self) -> float:
        return self.entry.low


def entry(name: str) -> ObsEntry:
    """The entry of key ``name``; ``KeyError`` naming the keys that exist otherwise."""
    for e in OBSERVATION:
        if e.name == name:
            return e
    raise KeyError(f"no observation key {name!r}; the keys are "
                   f"{', '.join(e.name for e in OBSERVATION)}")


def observation_keys(cfg: _EnvSettings) -> tuple[str, ...]:
    """The keys ``cfg`` observes, in order."""
    return tuple(e.name for e in OBSERVATION if e.enabled(cfg))


def observation_fields(cfg: _EnvSettings, embedding_shape: tuple[int, ...] | None = None,
                       embedding_dtype: torch.dtype | None = None) -> tuple[ObsField, ...]:
    """The observed entries of ``cfg`` with their per-episode shapes (``embedding_shape`` /
    ``embedding_dtype``: the segmenter's, needed only when the embedding is observed)."""
    out = []
    for e in OBSERVATION:
        if not e.enabled(cfg):
            continue
        if e.role == "embedding" and embedding_dtype is not None:
            e = replace(e, dtype=embedding_dtype)
        out.append(ObsField(e, e.shape(cfg, embedding_shape), e.upper(cfg)))
    return tuple(out)


def env_fields(env) -> tuple[ObsField, ...]:
    """``observation_fields`` of a ``ClickEnv``: its config's keys, the image embedding's shape
    and dtype read from its segmenter."""
    cfg = env.config
    shape = dtype = None
    if IMAGE_EMBEDDING in observation_keys(cfg):
        emb = env.segmenter.image_embedding(torch.zeros(1, dtype=torch.long, device=env.device))
        if emb is None:
            raise ValueError("obs_image_embedding=True needs a SAM2 segmenter with cached image "
                             "embeddings; the weight-free segmenter has none. Turn the option off "
                             "(obs_image_embedding=False, or drop --obs-image-embedding).")
        shape, dtype = tuple(emb.shape[1:]), emb.dtype
    return observation_fields(cfg, shape, dtype)
