"""One way to make the click env, with the training run's defaults, for every entry point.

    from gpu_env.make import make
    env = make()                       # the main job's task: ClickEnv over synthetic frames
    env = make(max_clicks=5, mask_prior=None, images=64)

``make`` returns the raw batched ``ClickEnv``; the Gymnasium envs (``gpu_env.gym_env``), the
TorchRL env (``make_torchrl``) and the Stable-Baselines3 adapter (``gpu_env.sb3_vec_env``) take
the same keywords and pass them here. Keywords are the training command's setting names
(``--max-clicks`` is ``max_clicks``): every ``EnvConfig`` field, the segmenter's fields
(``segmenter``, ``sam2_checkpoint``, ``feature_cache``, ...) and the data keywords below. An
unknown keyword is a ``TypeError`` naming it; nothing is ignored.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gpu_env.config import EnvConfig
from gpu_env.datasets import SegDataset, is_synthetic, load_dataset
from gpu_env.datasets.config import DataConfig
from gpu_env.datasets.frame_cache import default_frame_cache
from gpu_env.env import ClickEnv
from gpu_env.mask_prior import load_bundled_prior, load_prior_weights, prior_probabilities
from sam_batch.config import SegmenterConfig
from sam_batch.factory import build_segmenter

__all__ = ["make", "make_torchrl", "setting_names"]

_ENV = {f.name for f in fields(EnvConfig)}
_SEGMENTER = {f.name for f in fields(SegmenterConfig)} - {"kind"}


def setting_names() -> list[str]:
    """Every keyword ``make`` accepts besides its named arguments."""
    return sorted(_ENV | _SEGMENTER)


def _dataset(dataset: Any, split: str, images: int | None, image_size: int,
             frame_cache: Any = None, progress: bool = False) -> SegDataset:
    auto = isinstance(frame_cache, str) and frame_cache == "auto"
    explicit_cache = frame_cache is not None and not auto
    if isinstance(dataset, SegDataset):
        if images is not None:
            raise TypeError("images= sets how many synthetic frames to render; a SegDataset "
                            "given as dataset= already holds its images (pass its .subset(...)).")
        if explicit_cache:
            raise TypeError(f"frame_cache={str(frame_cache)!r} keeps rendered synthetic frames; "
                            f"a SegDataset given as dataset= is not rendered (leave it out).")
        return dataset
    if not isinstance(dataset, str):
        raise TypeError(f"dataset must be a source string ('synthetic', 'kvasir:<folder>', an "
                        f"image/mask folder) or a SegDataset, got {type(dataset).__name__}.")
    if is_synthetic(dataset):
        count = DataConfig().train_images if images is None else images
        return load_dataset(dataset, split=split, size=image_size, count=count,
                            frame_cache=default_frame_cache() if auto else frame_cache,
                            progress=progress)
    if images is not None:
        raise TypeError(f"images={images} applies to synthetic data only; {dataset!r} is a "
                        f"folder (all of the split's images are used).")
    if explicit_cache:
        raise TypeError(f"frame_cache={str(frame_cache)!r} keeps rendered synthetic frames; "
                        f"{dataset!r} is read from files (leave frame_cache out).")
    return load_dataset(dataset, split=split, size=image_size)


def _prior_maps(mask_prior: Any, env: ClickEnv, data: SegDataset) -> Tensor:
    """Per-image prior probabilities ``[N, 1, S, S]`` for ``env`` from a ``mask_prior`` value."""
    if isinstance(mask_prior, Tensor):
        return mask_prior
    if isinstance(mask_prior, str) and mask_prior == "auto":
        if not is_synthetic(data.name):
            raise ValueError(
                f"mask_prior='auto' has a bundled prior for synthetic data only, and the dataset "
                f"is {data.name!r}: pass the prior trained with your data (a MaskPrior, e.g. "
                f"ppo.prior.policy_prior(policy) of a trained run, or a .safetensors file of its "
                f"weights), or mask_prior=None for an env without the mask_prior and prior_click "
                f"keys.")
        mask_prior = "bundled"
    if isinstance(mask_prior, str) and mask_prior == "bundled":
        mask_prior, _ = load_bundled_prior()
    elif isinstance(mask_prior, (str, Path)):
        path = Path(mask_prior)
        if path.suffix != ".safetensors" or not path.is_file():
            raise ValueError(f"mask_prior={str(mask_prior)!r}: expected 'auto', 'bundled', None, "
                             f"a MaskPrior, a tensor of maps, or an existing .safetensors file of "
                             f"a MaskPrior's weights.")
        mask_prior = load_prior_weights(path)
    if not isinstance(mask_prior, nn.Module):
        raise TypeError(f"mask_prior must be 'auto', 'bundled', None, a MaskPrior, a tensor of "
                        f"maps or a .safetensors path, got {type(mask_prior).__name__}.")
    return prior_probabilities(mask_prior.to(env.device), env.rgb)


def make(dataset: Any = "synthetic", *, split: str = "train", images: int | None = None,
         image_size: int | None = None, segmenter: str = "weightfree",
         mask_prior: Any = "auto", device: str | torch.device = "cpu", progress: bool = True,
         frame_cache: Any = "auto", **settings: Any) -> ClickEnv:
    """The batched click env; with no arguments, the task ``sam2click-train`` trains on.

    Args:
      dataset: ``synthetic`` (the generator's frames), ``synthetic:<seed>``, ``kvasir:<folder>``,
        an image/mask folder, or a ``SegDataset``.
      split: the split to load (``train``, ``val``, ``test`` or ``all``).
      images: synthetic frames to render (default: the training run's ``train_images``).
      image_size: working size of the images (default: the training run's).
      segmenter: ``weightfree`` (no checkpoint) or ``sam2`` (give ``sam2_checkpoint`` and a
        ``feature_cache`` built by ``sam2click-embed``, as for training).
      mask_prior: what ``mask_prior`` observes: ``auto`` (the bundled prior on synthetic data, an
        error otherwise), ``bundled``, a ``MaskPrior``, a ``.safetensors`` file of its weights, a
        tensor of maps ``[N, 1, S, S]``, or None (no ``mask_prior``/``prior_click`` keys).
      device: where the env runs.
      progress: show progress bars while building.
      frame_cache: where rendered synthetic frames are kept so that the next build loads them
        instead of rendering (``gpu_env.datasets.frame_cache``): ``auto`` (the user's cache
        folder, ``~/.cache/sam2click/frames``; ``$SAM2CLICK_CACHE_DIR`` moves it), a folder, or
        None (render every time, write nothing). About 210 MB for the default 1,024 frames.
      **settings: ``EnvConfig`` and segmenter fields by name (``max_clicks=5``).
    """
    unknown = set(settings) - _ENV - _SEGMENTER
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(sorted(unknown))}; the env takes "
                        f"{', '.join(setting_names())} (and dataset, split, images, image_size, "
                        f"segmenter, mask_prior, device, progress, frame_cache).")
    env_kw = {k: v for k, v in settings.items() if k in _ENV}
    if mask_prior is None:
        if env_kw.get("obs_mask_prior") or env_kw.get("obs_prior_click"):
            raise ValueError("mask_prior=None but obs_mask_prior/obs_prior_click=True: give a "
                             "mask prior, or leave those settings out.")
        env_kw.setdefault("obs_mask_prior", False)
        env_kw.setdefault("obs_prior_click", False)
    config = replace(EnvConfig(), **env_kw)
    seg_cfg = replace(SegmenterConfig(), kind=segmenter,
                      **{k: v for k, v in settings.items() if k in _SEGMENTER})
    size = DataConfig().image_size if image_size is None else image_size
    data = _dataset(dataset, split, images, size, frame_cache, progress)
    device = torch.device(device)
    seg = build_segmenter(seg_cfg, data.images, device, image_ids=data.ids, split=split,
                          progress=progress)
    env = ClickEnv(seg, data, config)
    if config.obs_mask_prior:
        env.set_mask_prior(_prior_maps(mask_prior, env, data))
    return env


def make_torchrl(num_envs: int, seed: int = 0, **kwargs: Any):
    """The TorchRL env (``SAM2ClickTorchRLEnv``, ``batch_size=[num_envs]``) over ``make(**kwargs)``."""
    from gpu_env.torchrl_env import SAM2ClickTorchRLEnv

    return SAM2ClickTorchRLEnv(make(**kwargs), batch_size=num_envs, seed=seed)
