"""SAM2's two-way transformer with a key-padding mask over the prompt tokens.

Same computation as ``sam2.modeling.sam.transformer.TwoWayTransformer.forward``, step by step,
with SAM2's own submodules (q/k/v/out projections, layer norms, MLPs), except that prompt
tokens whose ``token_mask`` is False are removed from attention *as keys*:

* token self-attention (keys = tokens): masked;
* image → token cross-attention (keys = tokens): masked;
* token → image cross-attention (keys = image): needs no mask; padded tokens still produce
  (garbage) query outputs, but those rows are never read: every later use of a token as a key
  is masked, and the MLP and layer norms act per token.

So a row whose valid tokens are a subset of its slots decodes as if only those tokens existed,
which is what lets episodes with different click counts share one static-shape batch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["masked_attention", "masked_two_way_transformer"]


def masked_attention(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
    """SAM2 ``Attention.forward`` with an optional boolean key mask.

    Args:
      attn: a ``sam2.modeling.sam.transformer.Attention`` (its projections and head count).
      q: ``[B, Nq, C]``; k, v: ``[B, Nk, C]``.
      key_mask: ``[B, Nk]`` bool, True = the key takes part; None = all keys.
    Returns ``[B, Nq, C]``.
    """
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    mask = None if key_mask is None else key_mask[:, None, None, :]  # B x heads x Nq x Nk
    dropout_p = attn.dropout_p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return attn.out_proj(attn._recombine_heads(out))


def _block(layer: nn.Module, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor,
           token_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``TwoWayAttentionBlock.forward`` with ``token_mask`` applied where tokens are keys."""
    # Self attention block (the first layer has no PE and, as in SAM2, no residual).
    if layer.skip_first_layer_pe:
        queries = masked_attention(layer.self_attn, queries, queries, queries, token_mask)
    else:
        q = queries + query_pe
        queries = queries + masked_attention(layer.self_attn, q, q, queries, token_mask)
    queries = layer.norm1(queries)

    # Cross attention, tokens attending to the image (image keys are never padded).
    q = queries + query_pe
    k = keys + key_pe  # `keys` is unchanged until norm4, so SAM2's second `keys + key_pe` equals this
    queries = layer.norm2(queries + layer.cross_attn_token_to_image(q=q, k=k, v=keys))

    # MLP block.
    queries = layer.norm3(queries + layer.mlp(queries))

    # Cross attention, image attending to tokens: padded tokens are masked keys.
    q = queries + query_pe
    keys = layer.norm4(keys + masked_attention(layer.cross_attn_image_to_token, k, q, queries, token_mask))
    return queries, keys


def masked_two_way_transformer(
    transformer: nn.Module,
    image_embedding: Tensor,
    image_pe: Tensor,
    point_embedding: Tensor,
    token_mask: Tensor,
) -> tuple[Tensor, Tensor]:
    """``TwoWayTransformer.forward`` with a key-padding mask over the tokens.

    Args:
      transformer: SAM2's ``TwoWayTransformer`` (weights are used, its forward is not).
      image_embedding: ``[B, C, h, w]``.
      image_pe: ``[1 or B, C, h, w]`` (broadcast over the batch).
      point_embedding: ``[B, N, C]`` output tokens followed by prompt tokens.
      token_mask: ``[B, N]`` bool, False for padded prompt tokens.
    Returns ``(queries [B, N, C], keys [B, h*w, C])``.
    """
    image_embedding = image_embedding.flatten(2).permute(0, 2, 1)
    image_pe = image_pe.flatten(2).permute(0, 2, 1)

    queries = point_embedding
    keys = image_embedding
    for layer in transformer.layers:
        queries, keys = _block(layer, queries, keys, point_embedding, image_pe, token_mask)

    # Final attention from the tokens to the image.
    q = queries + point_embedding
    k = keys + image_pe
    queries = queries + transformer.final_attn_token_to_image(q=q, k=k, v=keys)
    queries = transformer.norm_final_attn(queries)
    return queries, keys
