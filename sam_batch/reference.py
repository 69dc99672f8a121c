"""Slow reference decode: one episode at a time through SAM2's own modules.

For each row, the valid clicks (label != -1) alone are passed to ``model.sam_prompt_encoder``
and ``model.sam_mask_decoder`` exactly as ``SAM2ImagePredictor._predict`` calls them (one
image, ``repeat_image=False``, high-res features, logits clamped to [-32, 32]); multimask rows
keep the output of highest predicted IoU, single-mask rows take the decoder's single output
(which applies the dynamic stability fallback when the model has it on). Used by the parity
tests and by the benchmark as the per-episode baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sam_batch.cache import FeatureCache
from sam_batch.encoder import SAM2Features
from sam_batch.segmenter import DecodeOutput

__all__ = ["predict_one", "reference_decode"]


@torch.no_grad()
def predict_one(
    model: nn.Module,
    image_embed: Tensor,
    high_res_feats: Sequence[Tensor],
    point_coords: Tensor | None,
    point_labels: Tensor | None,
    mask_input: Tensor | None,
    multimask_output: bool,
) -> tuple[Tensor, Tensor]:
    """``SAM2ImagePredictor._predict`` for one image, without boxes and without upscaling.

    Args: image_embed ``[1, C, h, w]``; high_res_feats ``[[1, C/8, 4h, 4w], [1, C/4, 2h, 2w]]``;
    point_coords ``[1, k, 2]``, point_labels ``[1, k]`` (or None); mask_input ``[1, 1, M, M]``.
    Returns ``(low_res_masks [1, m, M, M] clamped, iou_predictions [1, m])``, m = 3 or 1.
    """
    concat_points = (point_coords, point_labels) if point_coords is not None else None
    sparse_embeddings, dense_embeddings = model.sam_prompt_encoder(
        points=concat_points, boxes=None, masks=mask_input,
    )
    batched_mode = concat_points is not None and concat_points[0].shape[0] > 1
    low_res_masks, iou_predictions, _, _ = model.sam_mask_decoder(
        image_embeddings=image_embed,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse_embeddings,
        dense_prompt_embeddings=dense_embeddings,
        multimask_output=multimask_output,
        repeat_image=batched_mode,
        high_res_features=list(high_res_feats),
    )
    return torch.clamp(low_res_masks, -32.0, 32.0), iou_predictions


@torch.no_grad()
def reference_decode(
    model: nn.Module,
    features: FeatureCache | SAM2Features | Sequence[Tensor],
    image_ids: Tensor,
    points: Tensor,
    labels: Tensor,
    mask_input: Tensor | None = None,
    has_mask_input: Tensor | None = None,
    multimask: Tensor | bool = False,
    *,
    strip_padding: bool = True,
) -> DecodeOutput:
    """Decode each row alone (host loop). Same arguments and result as
    ``BatchedSAM2Decoder.decode``.

    ``strip_padding=False`` passes all K slots, ``-1`` ones included, to SAM2's prompt encoder
    (which then embeds them as not-a-point tokens that *do* take part in attention): used to
    show that masking, not plain ``-1`` padding, is what makes batching exact.
    """
    if isinstance(features, FeatureCache):
        features = features.features()
    emb_all, h0_all, h1_all = features
    dtype = next(model.parameters()).dtype
    b = image_ids.shape[0]
    mm = multimask.tolist() if isinstance(multimask, Tensor) else [bool(multimask)] * b
    logits, scores = [], []
    for r in range(b):
        i = int(image_ids[r])
        emb = emb_all[i : i + 1].to(dtype)
        high = [h0_all[i : i + 1].to(dtype), h1_all[i : i + 1].to(dtype)]
        keep = labels[r] != -1 if strip_padding else torch.ones_like(labels[r], dtype=torch.bool)
        coords = points[r][keep][None].to(torch.float32)
        labs = labels[r][keep][None].to(torch.int32)
        use_mask = mask_input is not None and (has_mask_input is None or bool(has_mask_input[r]))
        m_in = mask_input[r : r + 1].to(torch.float32) if use_mask else None
        masks, ious = predict_one(model, emb, high, coords, labs, m_in, mm[r])
        best = int(torch.argmax(ious[0])) if mm[r] else 0
        logits.append(masks[:, best : best + 1].float())
        scores.append(ious[:, best].float())
    return DecodeOutput(torch.cat(logits), torch.cat(scores))
