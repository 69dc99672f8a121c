"""The batched SAM2 decoder: one prompt-encoder and one mask-decoder pass for B episodes.

Each row gathers its own image's cached features (``index_select`` on the device-resident
cache) and decodes exactly as ``SAM2ImagePredictor._predict`` would for that episode alone:

* SAM2's prompt encoder pads the points with one not-a-point token when there are no boxes,
  so an episode with k clicks is k point tokens + 1 pad token. Here every row has ``K`` click
  slots + that pad token; slots labelled ``-1`` are masked out of attention as keys (see
  ``masked_transformer``), so they do not change the row's output.
* ``mask_input`` is per row (``has_mask_input``); rows without it get ``no_mask_embed``.
* All four masks are computed once; multimask rows keep the best of masks 1..3 by predicted
  IoU (what a ``predict(multimask_output=True)`` caller keeps); single-mask rows apply SAM2's
  dynamic multimask-via-stability fallback when the model has it on, else mask 0. The choice
  is a ``torch.where``, never a Python branch on values.
* Logits are clamped to [-32, 32] as ``_predict`` clamps ``low_res_masks``.

The decode path has no host synchronisation and static shapes; it compiles with
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sam_batch.cache import FeatureCache
from sam_batch.encoder import SAM2Features, feature_shapes
from sam_batch.masked_transformer import masked_two_way_transformer
from sam_batch.segmenter import DecodeOutput

__all__ = ["BatchedSAM2Decoder", "SAM2DecodeHead", "validate_decode_inputs"]

LOGIT_CLAMP = 32.0  # SAM2ImagePredictor._predict clamps low_res_masks to [-32, 32]
CPU_CHUNK = 4  # default rows per pass on a CPU (cache-sized; see BatchedSAM2Decoder)
ACCELERATOR_CHUNK = 256  # default rows per pass elsewhere


def validate_decode_inputs(
    image_ids: Tensor,
    points: Tensor,
    labels: Tensor,
    mask_input: Tensor | None = None,
    has_mask_input: Tensor | None = None,
    multimask: Tensor | bool = False,
    *,
    num_images: int,
    mask_size: int,
    device: torch.device | None = None,
) -> None:
    """Check decode inputs at an API boundary; raise ``ValueError`` naming the bad value.

    Reads tensor values (host sync): do not call it inside the hot loop.
    """

    def where(t: Tensor, name: str) -> None:
        if device is not None and t.device != torch.device(device):
            raise ValueError(f"{name} is on {t.device}, the decoder's features are on {device}; move it")

    for name, t in (("image_ids", image_ids), ("points", points), ("labels", labels)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        where(t, name)
    if image_ids.ndim != 1:
        raise ValueError(f"image_ids must be [B], got shape {tuple(image_ids.shape)}")
    b = image_ids.shape[0]
    if b == 0:
        raise ValueError("empty batch: image_ids has B=0 rows")
    if image_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"image_ids must be int64 (or int32), got {image_ids.dtype}")
    lo, hi = int(image_ids.min()), int(image_ids.max())
    if lo < 0 or hi >= num_images:
        bad = lo if lo < 0 else hi
        raise ValueError(f"image_ids contains {bad}, outside [0, {num_images}); the decoder holds {num_images} images")
    if points.ndim != 3 or points.shape[0] != b or points.shape[2] != 2:
        raise ValueError(f"points must be [B={b}, K, 2] (x, y), got shape {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be a float tensor of (x, y) pixels, got {points.dtype}")
    if not bool(torch.isfinite(points).all()):
        bad = torch.nonzero(~torch.isfinite(points))[0].tolist()
        raise ValueError(f"points has a non-finite value at index {bad}: {points[tuple(bad)].item()}")
    if labels.shape != points.shape[:2]:
        raise ValueError(f"labels must be [B, K] = {tuple(points.shape[:2])}, got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8):
        raise ValueError(f"labels must be an integer tensor (1 fg, 0 bg, -1 unused), got {labels.dtype}")
    ok = (labels == -1) | (labels == 0) | (labels == 1)
    if not bool(ok.all()):
        bad = torch.nonzero(~ok)[0].tolist()
        raise ValueError(f"labels[{bad[0]}, {bad[1]}] = {labels[bad[0], bad[1]].item()}; expected 1 (fg), 0 (bg) or -1 (unused)")
    if mask_input is not None:
        if not isinstance(mask_input, Tensor):
            raise ValueError(f"mask_input must be a torch.Tensor or None, got {type(mask_input).__name__}")
        where(mask_input, "mask_input")
        if tuple(mask_input.shape) != (b, 1, mask_size, mask_size):
            raise ValueError(f"mask_input must be [B, 1, {mask_size}, {mask_size}] low-res logits, "
                             f"got shape {tuple(mask_input.shape)}")
        if not mask_input.is_floating_point():
            raise ValueError(f"mask_input must be float logits, got {mask_input.dtype}")
        if not bool(torch.isfinite(mask_input).all()):
            raise ValueError("mask_input contains NaN/inf; pass finite logits (SAM2's are clamped to [-32, 32])")
    if has_mask_input is not None:
        if mask_input is None:
            raise ValueError("has_mask_input was given without mask_input")
        if not isinstance(has_mask_input, Tensor) or has_mask_input.dtype != torch.bool or tuple(has_mask_input.shape) != (b,):
            raise ValueError(f"has_mask_input must be a [B={b}] bool tensor, got "
                             f"{getattr(has_mask_input, 'dtype', type(has_mask_input).__name__)} "
                             f"{tuple(getattr(has_mask_input, 'shape', ()))}")
        where(has_mask_input, "has_mask_input")
    if isinstance(multimask, Tensor):
        if multimask.dtype != torch.bool or tuple(multimask.shape) != (b,):
            raise ValueError(f"multimask must be a bool or a [B={b}] bool tensor, got {multimask.dtype} {tuple(multimask.shape)}")
        where(multimask, "multimask")
    elif not isinstance(multimask, bool):
        raise ValueError(f"multimask must be a bool or a [B] bool tensor, got {type(multimask).__name__}")


class SAM2DecodeHead(nn.Module):
    """Prompt encoder + masked mask decoder over already-gathered per-row features.

    Uses the given SAM2 model's ``sam_prompt_encoder`` and ``sam_mask_decoder`` weights.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        if not self.mask_decoder.use_high_res_features:
            raise ValueError("SAM2 configs without high-res decoder features are not supported")

    def forward(
        self,
        image_embed: Tensor,
        high_res_0: Tensor,
        high_res_1: Tensor,
        points: Tensor,
        labels: Tensor,
        mask_input: Tensor | None,
        has_mask_input: Tensor | None,
        multimask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Args (B rows, K click slots, M = mask size):
          image_embed ``[B, C, h, w]``, high_res_0 ``[B, C/8, 4h, 4w]``, high_res_1
          ``[B, C/4, 2h, 2w]`` (compute dtype); points ``[B, K, 2]``; labels ``[B, K]``;
          mask_input ``[B, 1, M, M]`` or None; has_mask_input ``[B]`` bool or None (= all rows);
          multimask ``[B]`` bool.
        Returns ``(logits [B, 1, M, M] float32, score [B] float32)``.
        """
        pe, md = self.prompt_encoder, self.mask_decoder
        b = labels.shape[0]

        # Prompt encoder, SAM2's own forward: K slot tokens + the one pad token it appends.
        sparse, dense = pe(points=(points, labels), boxes=None, masks=mask_input)
        if mask_input is not None and has_mask_input is not None:
            no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            dense = torch.where(has_mask_input[:, None, None, None], dense, no_mask)

        # Output tokens as MaskDecoder.predict_masks builds them.
        s = 1 if md.pred_obj_scores else 0
        if md.pred_obj_scores:
            output_tokens = torch.cat([md.obj_score_token.weight, md.iou_token.weight, md.mask_tokens.weight], dim=0)
        else:
            output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        n_out = output_tokens.shape[0]
        output_tokens = output_tokens.unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        # Output tokens and the pad token always take part; click slots only when labelled.
        always = torch.ones(b, n_out, dtype=torch.bool, device=labels.device)
        pad = torch.ones(b, 1, dtype=torch.bool, device=labels.device)
        token_mask = torch.cat([always, labels != -1, pad], dim=1)

        src = image_embed + dense
        pos_src = pe.get_dense_pe()
        _, c, h, w = src.shape
        hs, src = masked_two_way_transformer(md.transformer, src, pos_src, tokens, token_mask)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : (s + 1 + md.num_mask_tokens), :]

        # Upscale with the high-res features and predict all masks from the mask tokens.
        src = src.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = md.output_upscaling
        upscaled = act1(ln1(dc1(src) + high_res_1))
        upscaled = act2(dc2(upscaled) + high_res_0)
        hyper_in = torch.stack(
            [md.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(md.num_mask_tokens)], dim=1
        )
        _, cu, hu, wu = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, cu, hu * wu)).view(b, -1, hu, wu)
        iou_pred = md.iou_prediction_head(iou_token_out)

        # Mask choice per row: multimask → best of 1..3 by predicted IoU; single → mask 0, or
        # SAM2's dynamic fallback to the best multimask output when mask 0 is unstable.
        best_multi = torch.argmax(iou_pred[:, 1:], dim=-1) + 1
        if md.dynamic_multimask_via_stability and not md.training:
            stability = md._get_stability_scores(masks[:, 0:1, :, :])[:, 0]
            is_stable = stability >= md.dynamic_multimask_stability_thresh
            single = torch.where(is_stable, torch.zeros_like(best_multi), best_multi)
        else:
            single = torch.zeros_like(best_multi)
        idx = torch.where(multimask, best_multi, single)
        logits = torch.take_along_dim(masks, idx[:, None, None, None], dim=1)
        score = torch.take_along_dim(iou_pred, idx[:, None], dim=1)[:, 0]
        logits = torch.clamp(logits, -LOGIT_CLAMP, LOGIT_CLAMP)
        return logits.float(), score.float()


def _as_features(features: FeatureCache | SAM2Features | Sequence[Tensor]) -> SAM2Features:
    if isinstance(features, FeatureCache):
        return features.features()
    if isinstance(features, SAM2Features):
        return features
    if len(features) != 3:
        raise ValueError("features must be (image_embed, high_res_0, high_res_1)")
    return SAM2Features(*features)


class BatchedSAM2Decoder:
    """``Segmenter`` over a device-resident SAM2 feature cache.

    Args:
      model: the SAM2Base the features were encoded with (its prompt encoder and mask
        decoder are used; it stays in eval mode).
      features: a loaded :class:`~sam_batch.cache.FeatureCache`, or in-memory
        ``(image_embed [N, C, h, w], high_res_0, high_res_1)`` tensors; moved to the model's
        device if elsewhere, kept in their (half) dtype.
      max_chunk: largest number of rows decoded in one pass; bigger batches are split into
        fixed-size chunks by a static Python loop (bounds activation memory). ``None``: 4 on
        a CPU, where small chunks keep the ~4 MiB-per-row activations in cache (b+ at 1024, one
        thread: 109 ms/episode at chunk 4 vs 141 at chunk 16), 256 on an accelerator.
      compile: wrap the per-chunk decode in ``torch.compile(fullgraph=True, dynamic=False)``.
    """

    def __init__(
        self,
        model: nn.Module,
        features: FeatureCache | SAM2Features | Sequence[Tensor],
        *,
        max_chunk: int | None = None,
        compile: bool = False,
    ) -> None:
        if max_chunk is not None and max_chunk < 1:
            raise ValueError(f"max_chunk={max_chunk} must be >= 1")
        feats = _as_features(features)
        want = feature_shapes(model)
        n = feats.image_embed.shape[0]
        for name, t, shape in zip(SAM2Features._fields, feats, want):
            if t.ndim != 4 or tuple(t.shape[1:]) != tuple(shape) or t.shape[0] != n:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected [N={n}, {', '.join(map(str, shape))}] "
                                 f"for this model (image_size={model.image_size}); encode with the same model")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.compute_dtype = next(model.parameters()).dtype
        self.features = SAM2Features(*(t.to(self.device) for t in feats))
        self.input_size = int(model.image_size)
        self.mask_size = 4 * int(model.sam_image_embedding_size)
        self.num_images = int(n)
        if max_chunk is None:
            max_chunk = CPU_CHUNK if self.device.type == "cpu" else ACCELERATOR_CHUNK
        self.max_chunk = int(max_chunk)
        self.head = SAM2DecodeHead(model)
        self._chunk_fn = (
            torch.compile(self._decode_chunk, fullgraph=True, dynamic=False) if compile else self._decode_chunk
        )

    def _gather(self, image_ids: Tensor) -> list[Tensor]:
        # index_select on the cache: each row reads its own image; the cache is never repeated.
        return [t.index_select(0, image_ids).to(self.compute_dtype) for t in self.features]

    def _decode_chunk(self, image_ids: Tensor, points: Tensor, labels: Tensor, mask_input: Tensor | None,
                      has_mask_input: Tensor | None, multimask: Tensor) -> tuple[Tensor, Tensor]:
        emb, h0, h1 = self._gather(image_ids)
        return self.head(emb, h0, h1, points, labels, mask_input, has_mask_input, multimask)

    @torch.no_grad()
    def decode(
        self,
        image_ids: Tensor,
        points: Tensor,
        labels: Tensor,
        mask_input: Tensor | None = None,
        has_mask_input: Tensor | None = None,
        multimask: Tensor | bool = False,
        *,
        validate: bool = False,
    ) -> DecodeOutput:
        """Decode B episodes (see ``Segmenter.decode``). ``validate=True`` checks the inputs
        first (host sync); leave it off in the hot loop."""
        if validate:
            validate_decode_inputs(image_ids, points, labels, mask_input, has_mask_input, multimask,
                                   num_images=self.num_images, mask_size=self.mask_size, device=self.device)
        b = image_ids.shape[0]
        if not isinstance(multimask, Tensor):
            multimask = torch.full((b,), bool(multimask), dtype=torch.bool, device=self.device)
        points = points.to(torch.float32)
        if mask_input is not None:
            mask_input = mask_input.to(torch.float32)
        logits, scores = [], []
        for s in range(0, b, self.max_chunk):  # static: depends on shapes only
            e = min(b, s + self.max_chunk)
            lg, sc = self._chunk_fn(
                image_ids[s:e], points[s:e], labels[s:e],
                None if mask_input is None else mask_input[s:e],
                None if has_mask_input is None else has_mask_input[s:e],
                multimask[s:e],
            )
            logits.append(lg)
            scores.append(sc)
        if len(logits) == 1:
            return DecodeOutput(logits[0], scores[0])
        return DecodeOutput(torch.cat(logits), torch.cat(scores))

    def image_embedding(self, image_ids: Tensor) -> Tensor:
        """``[B, C, h, w]`` cached stride-16 embedding, in the cache's (half) dtype."""
        return self.features.image_embed.index_select(0, image_ids)
