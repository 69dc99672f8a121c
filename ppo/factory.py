"""Building a run's pieces from a ``TrainConfig``: device, datasets, segmenter, env."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpu_env.datasets import SegDataset, is_synthetic, load_dataset
from gpu_env.datasets.augment import augment
from gpu_env.env import ClickEnv
from ppo.config import TrainConfig
from ppo.distributed import shard_indices


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use --device cpu")
    return dev


def load_split(cfg: TrainConfig, split: str, count: int) -> SegDataset:
    """The dataset split named in the config (synthetic: ``count`` images); the training split
    with its ``augment_copies`` augmented copies."""
    kw = {"count": count} if is_synthetic(cfg.dataset) else {}
    data = load_dataset(cfg.dataset, split=split, size=cfg.image_size, **kw)
    if split == cfg.train_split and cfg.augment_copies:
        data = augment(data, cfg.augment_copies, cfg.augment_seed)
    return data


def build_segmenter(cfg: TrainConfig, dataset: SegDataset, split: str, device: torch.device,
                    indices: list[int] | None = None):
    """The configured segmenter over ``dataset``'s images; ``indices``: ``dataset`` is this
    subset of the split, and only those images' features are loaded from the cache."""
    if cfg.segmenter == "weightfree":
        from sam_batch.geodesic import GeodesicSegmenter

        return GeodesicSegmenter(dataset.images.to(device))
    from sam_batch.cache import load_cache
    from sam_batch.decoder import BatchedSAM2Decoder
    from sam_batch.model import build_sam, checkpoint_fingerprint

    if cfg.feature_cache is None:
        raise ValueError(
            "segmenter='sam2' needs --feature-cache: build it first with "
            "`python -m scripts.embed --dataset ... --out caches/<name>` for each split."
        )
    model = build_sam(cfg.sam2_config, cfg.sam2_checkpoint, device=device, seed=cfg.sam2_seed,
                      image_size=cfg.sam2_image_size)
    fingerprint = checkpoint_fingerprint(cfg.sam2_checkpoint, cfg.sam2_config, cfg.sam2_seed,
                                         cfg.sam2_image_size)
    cache = load_cache(cfg.feature_cache.replace("{split}", split), device,
                       expect_fingerprint=fingerprint, indices=indices)
    if list(cache.meta["image_ids"]) != list(dataset.ids):
        raise ValueError(
            f"feature cache {cfg.feature_cache!r} holds other images than split {split!r} of "
            f"{cfg.dataset!r}; re-run scripts.embed for this split."
        )
    return BatchedSAM2Decoder(model, cache)


@dataclass
class RunEnvs:
    train_env: ClickEnv | None
    eval_env: ClickEnv | None
    train_data: SegDataset | None
    eval_data: SegDataset | None


def build_envs(cfg: TrainConfig, device: torch.device, train: bool = True, *, rank: int = 0,
               world_size: int = 1, held_out: bool = True) -> RunEnvs:
    """Training and held-out envs (``train=False``: the held-out one only, for evaluation).

    Multi-process runs: with ``cfg.shard_data`` rank ``rank`` of ``world_size`` keeps only
    training images ``rank::world_size`` (and only their cached features); ``held_out=False``
    skips the held-out env (only rank 0 evaluates).
    """
    env_cfg = cfg.env_config()
    held = eval_env = None
    if held_out or not train:
        held = load_split(cfg, cfg.eval_split, cfg.eval_images)
        eval_env = ClickEnv(build_segmenter(cfg, held, cfg.eval_split, device), held, env_cfg)
    if not train:
        return RunEnvs(None, eval_env, None, held)
    data = load_split(cfg, cfg.train_split, cfg.train_images)
    shard = None
    if cfg.shard_data and world_size > 1:
        shard = shard_indices(len(data), rank, world_size)
        data = data.subset(shard)
    train_env = ClickEnv(build_segmenter(cfg, data, cfg.train_split, device, shard), data, env_cfg)
    return RunEnvs(train_env, eval_env, data, held)
