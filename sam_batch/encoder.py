"""SAM2 image encoding, exactly as ``SAM2ImagePredictor.set_image`` does it.

``SAM2ImagePredictor`` is not imported (its transforms pull torchvision, which does not import
on this CPU torch); its preprocessing is reproduced with the same tensor ops torchvision runs:
``ToTensor`` (uint8 HWC → float CHW / 255), ``Resize((S, S))`` (bilinear, antialias, no
align-corners; skipped when the image is already S x S) and ``Normalize`` (ImageNet mean/std).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAM2Features",
    "encode_batch",
    "encode_images",
    "feature_shapes",
    "preprocess",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SAM2Features(NamedTuple):
    """The three feature levels ``SAM2ImagePredictor`` keeps per image (1024 model shapes)."""

    image_embed: Tensor
    """``[B, 256, 64, 64]`` stride-16 embedding (``no_mem_embed`` already added)."""
    high_res_0: Tensor
    """``[B, 32, 256, 256]`` stride-4 features, already projected by ``conv_s0``."""
    high_res_1: Tensor
    """``[B, 64, 128, 128]`` stride-8 features, already projected by ``conv_s1``."""


def feature_shapes(model: torch.nn.Module) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Per-image shapes ``(image_embed, high_res_0, high_res_1)`` for ``model``."""
    s = int(model.image_size) // int(model.backbone_stride)
    c = int(model.hidden_dim)
    return (c, s, s), (c // 8, 4 * s, 4 * s), (c // 4, 2 * s, 2 * s)


def preprocess(image: np.ndarray, image_size: int) -> Tensor:
    """``[3, S, S]`` float32 model input from an ``HxWx3`` uint8 RGB image (CPU, as the predictor)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an HxWx3 uint8 RGB numpy image, got {type(image).__name__} of shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (values 0..255), got dtype {image.dtype}; convert it first")
    # ToTensor: HWC → CHW, then float / 255.
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).contiguous()
    x = x.to(dtype=torch.float32).div(255)
    # Resize((S, S)): torchvision returns the input untouched when it already has that size.
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x[None], size=[image_size, image_size], mode="bilinear",
                          align_corners=False, antialias=True)[0]
    # Normalize: (x - mean) / std with float32 mean/std, as tensor.sub_(mean).div_(std).
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)
    return x.sub(mean).div(std)


@torch.no_grad()
def encode_batch(model: torch.nn.Module, images: Tensor) -> SAM2Features:
    """Run SAM2's image encoder on preprocessed ``[B, 3, S, S]`` inputs (on the model's device).

    Same steps as ``SAM2ImagePredictor.set_image_batch``: ``forward_image`` (which applies the
    decoder's ``conv_s0``/``conv_s1`` to the high-res levels), ``_prepare_backbone_features``,
    ``no_mem_embed`` added to the lowest-resolution level when ``directly_add_no_mem_embed``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected preprocessed images [B, 3, S, S], got shape {tuple(images.shape)}")
    if not model.use_high_res_features_in_sam:
        raise ValueError("this SAM2 config does not use high-res features in the mask decoder; "
                         "only configs with use_high_res_features_in_sam=true are supported")
    b = images.shape[0]
    backbone_out = model.forward_image(images)
    _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    # vision_feats are HWxBxC, high-res first; back to BxCxHxW.
    feats = [f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(vision_feats, feat_sizes)]
    return SAM2Features(image_embed=feats[2], high_res_0=feats[0], high_res_1=feats[1])


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    *,
    batch_size: int = 4,
    dtype: torch.dtype = torch.float16,
    progress: bool = False,
) -> SAM2Features:
    """Encode ``HxWx3`` uint8 RGB images in memory (no disk cache), ``batch_size`` at a time.

    Returns the features on the model's device, stored in ``dtype`` (half precision by default,
    as in the on-disk cache). For datasets that do not fit in memory use
    ``sam_batch.cache.encode_to_cache``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if len(images) == 0:
        raise ValueError("no images to encode")
    device = next(model.parameters()).device
    size = int(model.image_size)
    parts: list[SAM2Features] = []
    for s in tqdm(range(0, len(images), batch_size), desc="encoding", unit="batch", disable=not progress):
        x = torch.stack([preprocess(im, size) for im in images[s : s + batch_size]]).to(device)
        parts.append(SAM2Features(*(t.to(dtype) for t in encode_batch(model, x))))
    return SAM2Features(*(torch.cat(level) for level in zip(*parts)))
