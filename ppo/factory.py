"""Building a run's pieces from a ``TrainConfig``: device, datasets, segmenter, env."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from gpu_env.datasets import SegDataset, is_synthetic, load_dataset
from gpu_env.datasets.augment import augment
from gpu_env.datasets.splits import check_disjoint, first_images
from gpu_env.env import ClickEnv
from gpu_env.datasets.config import DataConfig
from ppo.config import TrainConfig
from ppo.distributed import shard_indices
from sam_batch.factory import build_segmenter


class DeviceError(ValueError):
    """A ``--device`` value this machine cannot use; the message names it and what to pass."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda if available, else cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a
    ``torch.device`` this machine has; raises ``DeviceError`` naming the value otherwise."""
    expected = "expected auto, cpu, cuda, cuda:N or mps"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"--device {name!r} is not a device: {expected}; pass e.g. "
                         f"--device cpu (or auto).") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name!r} but CUDA is not available on this machine; "
                             f"pass --device cpu (or auto).")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"--device {name!r} but this machine has {count} CUDA device(s) "
                             f"(cuda:0 to cuda:{count - 1}); pass one of those, or cuda.")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"--device {name!r} but MPS is not available on this machine; "
                             f"pass --device cpu (or auto).")
    elif dev.type != "cpu":
        raise DeviceError(f"--device {name!r} is not supported: {expected}.")
    return dev


def warn_slow_cpu_bf16(autocast: str, device: torch.device) -> bool:
    """Warn (once per run, and return True) when ``--autocast bf16`` runs on a CPU without
    native bf16 support in oneDNN: there bf16 is emulated and slower than fp32 (measured on
    the main job: 0.7x with AVX-512 but no bf16, 0.06x with AVX2 only; README, "Throughput on
    the 2-core CPU")."""
    if autocast != "bf16" or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    warnings.warn("--autocast bf16 on a CPU without native bf16 (oneDNN reports no AVX512-BF16 "
                  "or AMX): it runs slower than fp32 here; drop --autocast for fp32",
                  stacklevel=3)
    return True


def load_split(data: DataConfig, split: str, count: int) -> SegDataset:
    """The dataset split named in the data section (synthetic: ``count`` images); the training
    split with its ``augment_copies`` augmented copies."""
    kw = {"count": count} if is_synthetic(data.dataset) else {}
    loaded = load_dataset(data.dataset, split=split, size=data.image_size, **kw)
    if split == data.train_split and data.augment_copies:
        loaded = augment(loaded, data.augment_copies, data.augment_seed)
    return loaded


def split_env(cfg: TrainConfig, split: str, count: int, device: torch.device,
              shard: tuple[int, int] | None = None, *, first: bool = False,
              disjoint_from: SegDataset | None = None) -> tuple[ClickEnv, SegDataset]:
    """The env over one split (``shard = (rank, world_size)``: only that rank's images) and its
    dataset. ``first``: keep only the first ``count`` images (a folder split holds more than
    asked for; ``count < 1`` is refused). ``disjoint_from``: refuse a split sharing images with
    that one (checked on the whole split, before sharding)."""
    data = load_split(cfg.data, split, count)
    if disjoint_from is not None:
        check_disjoint(data, disjoint_from)
    indices = first_images(data, count) if first else None
    if shard is not None:
        indices = shard_indices(len(data), *shard)
    if indices is not None:
        data = data.subset(indices)
    segmenter = build_segmenter(cfg.segmenter, data.images, device, image_ids=data.ids,
                                split=split, indices=indices,
                                load_original=lambda j: data.load_original(j)[0])
    return ClickEnv(segmenter, data, cfg.env), data


@dataclass
class RunEnvs:
    train_env: ClickEnv | None
    eval_env: ClickEnv | None
    train_data: SegDataset | None
    eval_data: SegDataset | None


def build_envs(cfg: TrainConfig, device: torch.device, train: bool = True, *, rank: int = 0,
               world_size: int = 1, held_out: bool = True) -> RunEnvs:
    """Training and held-out envs (``train=False``: the held-out one only, for evaluation).

    Multi-process runs: with ``cfg.data.shard_data`` rank ``rank`` of ``world_size`` keeps only
    training images ``rank::world_size`` (and only their cached features); ``held_out=False``
    skips the held-out env (only rank 0 evaluates).
    """
    held = eval_env = None
    if held_out or not train:
        eval_env, held = split_env(cfg, cfg.data.eval_split, cfg.data.eval_images, device,
                                   first=True)
    if not train:
        return RunEnvs(None, eval_env, None, held)
    shard = (rank, world_size) if cfg.data.shard_data and world_size > 1 else None
    train_env, data = split_env(cfg, cfg.data.train_split, cfg.data.train_images, device, shard,
                                disjoint_from=held)
    return RunEnvs(train_env, eval_env, data, held)
