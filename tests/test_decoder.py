"""Batched SAM2 decode vs SAM2's own per-episode path, padding masks, input checks, no host
sync, torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam_batch.cache import encode_to_cache, load_cache
from sam_batch.decoder import BatchedSAM2Decoder, validate_decode_inputs
from sam_batch.encoder import SAM2Features
from sam_batch.reference import reference_decode
from sam_batch.segmenter import DecodeOutput, Segmenter
from references.sam_fixtures import (
    TINY_CONFIG,
    TINY_SIZE,
    decoder_settings,
    random_episodes,
    random_features,
    synthetic_images,
    tiny_model,
)
from tests.sync_guard import forbid_host_sync

N_IMAGES = 4
K = 5
M = TINY_SIZE // 4
FP32_TOL = 1e-4
# bf16 autocast: both paths round every matmul to bf16 (8-bit mantissa); a row's logits may
# differ by a few bf16 ulps of their magnitude (measured: <= 1 ulp, 0.016 at |logit| ~ 2).
BF16_RTOL = 2**-5  # elementwise |Δ| <= BF16_RTOL * (1 + |ref|)
BF16_SCORE_TOL = 2e-2


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def feats(model: torch.nn.Module) -> SAM2Features:
    return random_features(model, N_IMAGES, seed=0)


@pytest.fixture(scope="module")
def decoder(model: torch.nn.Module, feats: SAM2Features) -> BatchedSAM2Decoder:
    return BatchedSAM2Decoder(model, feats)


def _both(dec: BatchedSAM2Decoder, model, feats, ep, use_mask: bool, multimask) -> tuple[DecodeOutput, DecodeOutput]:
    kw = dict(multimask=multimask)
    if use_mask:
        kw.update(mask_input=ep.mask_input, has_mask_input=ep.has_mask_input)
    out = dec.decode(ep.image_ids, ep.points, ep.labels, validate=True, **kw)
    ref = reference_decode(model, feats, ep.image_ids, ep.points, ep.labels, **kw)
    return out, ref


def _max_diff(a: DecodeOutput, b: DecodeOutput) -> tuple[float, float]:
    return float((a.logits - b.logits).abs().max()), float((a.score - b.score).abs().max())


@pytest.mark.parametrize("b", [1, 3, 8])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("multimask", ["first_click", False, True])
def test_batched_matches_reference_fp32(decoder, model, feats, b: int, use_mask: bool, multimask) -> None:
    ep = random_episodes(b, K, N_IMAGES, TINY_SIZE, M, seed=10 * b + use_mask)
    mm = ep.multimask if multimask == "first_click" else multimask
    out, ref = _both(decoder, model, feats, ep, use_mask, mm)
    assert out.logits.shape == (b, 1, M, M) and out.score.shape == (b,)
    assert out.logits.dtype == torch.float32 and out.score.dtype == torch.float32
    dl, ds = _max_diff(out, ref)
    assert dl <= FP32_TOL and ds <= FP32_TOL, (dl, ds)


def _stabilities(model, feats, ep) -> torch.Tensor:
    """Stability score of mask 0 per row, from SAM2's own path (dynamic fallback off)."""
    with decoder_settings(model, dynamic_multimask_via_stability=False):
        ref = reference_decode(model, feats, ep.image_ids, ep.points, ep.labels)
    return model.sam_mask_decoder._get_stability_scores(ref.logits)[:, 0]


@pytest.mark.parametrize("mode", ["mixed", "always_stable", "never_stable", "dynamic_off"])
def test_single_mask_selection_matches_reference(decoder, model, feats, mode: str) -> None:
    # Random weights give no control over stability, so the threshold is moved to cover both
    # outcomes of SAM2's dynamic multimask fallback (and a mix of them in one batch).
    ep = random_episodes(8, K, N_IMAGES, TINY_SIZE, M, seed=5)
    stab = _stabilities(model, feats, ep)
    settings = {
        "mixed": dict(dynamic_multimask_stability_thresh=float(stab.median())),
        "always_stable": dict(dynamic_multimask_stability_thresh=-1.0),
        "never_stable": dict(dynamic_multimask_stability_thresh=2.0),
        "dynamic_off": dict(dynamic_multimask_via_stability=False),
    }[mode]
    with decoder_settings(model, **settings):
        out, ref = _both(decoder, model, feats, ep, True, False)
        with decoder_settings(model, dynamic_multimask_via_stability=False):
            mask0 = reference_decode(model, feats, ep.image_ids, ep.points, ep.labels,
                                     ep.mask_input, ep.has_mask_input, False)
    dl, ds = _max_diff(out, ref)
    assert dl <= FP32_TOL and ds <= FP32_TOL
    fell_back = (ref.logits - mask0.logits).abs().amax(dim=(1, 2, 3)) > 0
    if mode == "mixed":
        assert fell_back.any() and not fell_back.all()
    elif mode == "never_stable":
        assert fell_back.all()
    else:
        assert not fell_back.any()


def test_bf16_autocast_matches_reference(decoder, model, feats) -> None:
    ep = random_episodes(8, K, N_IMAGES, TINY_SIZE, M, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = _both(decoder, model, feats, ep, True, ep.multimask)
    assert out.logits.dtype == torch.float32
    err = (out.logits - ref.logits).abs()
    assert bool((err <= BF16_RTOL * (1 + ref.logits.abs())).all()), float(err.max())
    assert float((out.score - ref.score).abs().max()) <= BF16_SCORE_TOL
    assert float(((out.logits > 0) == (ref.logits > 0)).float().mean()) >= 0.995


def test_plain_minus_one_padding_is_not_exact(decoder, model, feats) -> None:
    # Feeding the -1 slots to SAM2 (as not-a-point tokens that attend) changes padded rows;
    # masking them out is what makes a padded row decode as alone.
    ep = random_episodes(8, K, N_IMAGES, TINY_SIZE, M, seed=1)
    out = decoder.decode(ep.image_ids, ep.points, ep.labels)
    unmasked = reference_decode(model, feats, ep.image_ids, ep.points, ep.labels, strip_padding=False)
    per_row = (out.logits - unmasked.logits).abs().amax(dim=(1, 2, 3))
    padded = ep.num_clicks < K
    assert padded.any() and (~padded).any()
    assert bool((per_row[padded] > 1e-2).all()), per_row
    assert bool((per_row[~padded] <= FP32_TOL).all()), per_row


def test_padded_slot_contents_are_ignored(decoder) -> None:
    ep = random_episodes(6, K, N_IMAGES, TINY_SIZE, M, seed=2)
    junk = torch.where((ep.labels == -1)[..., None], torch.full_like(ep.points, 1e4), ep.points)
    a = decoder.decode(ep.image_ids, ep.points, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask)
    b = decoder.decode(ep.image_ids, junk, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.score, b.score)


def test_chunking_and_bool_multimask(model, feats) -> None:
    ep = random_episodes(8, K, N_IMAGES, TINY_SIZE, M, seed=3)
    whole = BatchedSAM2Decoder(model, feats, max_chunk=256).decode(ep.image_ids, ep.points, ep.labels, ep.mask_input, None, True)
    chunked = BatchedSAM2Decoder(model, feats, max_chunk=3).decode(
        ep.image_ids, ep.points, ep.labels, ep.mask_input, None, torch.ones(8, dtype=torch.bool))
    dl, ds = _max_diff(whole, chunked)
    assert dl <= 1e-5 and ds <= 1e-5
    assert BatchedSAM2Decoder(model, feats).max_chunk == 4  # CPU default


def test_segmenter_protocol(decoder, feats) -> None:
    assert isinstance(decoder, Segmenter)
    assert (decoder.input_size, decoder.mask_size, decoder.num_images) == (TINY_SIZE, M, N_IMAGES)
    assert decoder.device == torch.device("cpu")
    ids = torch.tensor([3, 0, 3])
    emb = decoder.image_embedding(ids)
    assert emb.dtype == torch.float16 and torch.equal(emb, feats.image_embed[ids])


def test_decoder_rejects_features_of_another_size(model) -> None:
    other = random_features(tiny_model(128), 2)
    with pytest.raises(ValueError, match=r"image_embed has shape \(2, 256, 8, 8\), expected \[N=2, 256, 16, 16\]"):
        BatchedSAM2Decoder(model, other)


def _good_inputs() -> dict:
    ep = random_episodes(3, K, N_IMAGES, TINY_SIZE, M, seed=4)
    return dict(image_ids=ep.image_ids, points=ep.points, labels=ep.labels, mask_input=ep.mask_input,
                has_mask_input=ep.has_mask_input, multimask=ep.multimask)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.update(image_ids=torch.tensor([0, 4, 1])), r"image_ids contains 4, outside \[0, 4\)"),
        (lambda d: d.update(image_ids=torch.tensor([0, -1, 1])), r"image_ids contains -1"),
        (lambda d: d.update(image_ids=d["image_ids"].float()), "image_ids must be int64"),
        (lambda d: d["points"].__setitem__((1, 2, 0), float("nan")), r"points has a non-finite value at index \[1, 2, 0\]"),
        (lambda d: d.update(points=d["points"][:, :, :1]), r"points must be \[B=3, K, 2\]"),
        (lambda d: d["labels"].__setitem__((2, 1), 2), r"labels\[2, 1\] = 2; expected 1 \(fg\), 0 \(bg\) or -1"),
        (lambda d: d.update(labels=d["labels"].float()), "labels must be an integer tensor"),
        (lambda d: d.update(labels=d["labels"][:, :2]), r"labels must be \[B, K\] = \(3, 5\)"),
        (lambda d: d.update(mask_input=d["mask_input"][..., :32]), r"mask_input must be \[B, 1, 64, 64\]"),
        (lambda d: d["mask_input"].__setitem__((0, 0, 0, 0), float("inf")), "mask_input contains NaN/inf"),
        (lambda d: d.update(mask_input=None), "has_mask_input was given without mask_input"),
        (lambda d: d.update(has_mask_input=d["has_mask_input"].long()), r"has_mask_input must be a \[B=3\] bool"),
        (lambda d: d.update(multimask=torch.ones(2, dtype=torch.bool)), r"multimask must be a bool or a \[B=3\]"),
        (lambda d: d.update(multimask=1), "multimask must be a bool"),
    ],
)
def test_bad_inputs_raise_clear_errors(decoder, change, match: str) -> None:
    d = _good_inputs()
    validate_decode_inputs(**d, num_images=N_IMAGES, mask_size=M)  # the unmodified batch is fine
    change(d)
    with pytest.raises(ValueError, match=match):
        decoder.decode(**d, validate=True)


def test_decode_does_not_sync_with_host(decoder) -> None:
    ep = random_episodes(5, K, N_IMAGES, TINY_SIZE, M, seed=6)
    ref = decoder.decode(ep.image_ids, ep.points, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask)
    with forbid_host_sync():
        out = decoder.decode(ep.image_ids, ep.points, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask)
        scalar = decoder.decode(ep.image_ids, ep.points, ep.labels, multimask=True)  # bool multimask path
    assert torch.equal(out.logits, ref.logits) and scalar.logits.shape == ref.logits.shape
    with pytest.raises(AssertionError), forbid_host_sync():  # the guard does catch a sync
        reference_decode(decoder.model, decoder.features, ep.image_ids, ep.points, ep.labels)


def _compile_check(backend: str) -> None:
    model = tiny_model(128)
    feats = random_features(model, 3, seed=1)
    dec = BatchedSAM2Decoder(model, feats)
    ep = random_episodes(4, 3, 3, 128, 32, seed=7)
    args = (ep.image_ids, ep.points, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask)
    fn = torch.compile(dec._decode_chunk, fullgraph=True, dynamic=False, backend=backend)
    with torch.no_grad():
        got = fn(*args)
        want = dec._decode_chunk(*args)
    assert float((got[0] - want[0]).abs().max()) <= 1e-4
    assert float((got[1] - want[1]).abs().max()) <= 1e-4


def test_decode_core_compiles_fullgraph() -> None:
    # Graph capture without breaks (fullgraph=True) is what matters for the hot path; the
    # aot_eager backend checks it in seconds. Inductor code generation: the slow test below.
    torch._dynamo.reset()
    _compile_check("aot_eager")


@pytest.mark.slow
def test_decode_core_compiles_with_inductor() -> None:
    torch._dynamo.reset()
    _compile_check("inductor")
    ep = random_episodes(4, 3, 3, 128, 32, seed=8)
    dec = BatchedSAM2Decoder(tiny_model(128), random_features(tiny_model(128), 3, seed=1), compile=True)
    a = dec.decode(ep.image_ids, ep.points, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask)
    b = reference_decode(tiny_model(128), dec.features, ep.image_ids, ep.points, ep.labels,
                         ep.mask_input, ep.has_mask_input, ep.multimask)
    assert _max_diff(a, b)[0] <= FP32_TOL


def test_end_to_end_from_disk_cache(tmp_path: Path) -> None:
    # Real images → encoder → fp16 cache on disk → loaded → batched decode == reference.
    model = tiny_model(128)
    images = synthetic_images(3, seed=9)
    encode_to_cache(model, images, ["a", "b", "c"], tmp_path / "c", config_name=TINY_CONFIG,
                    fingerprint="random:sam2.1_hiera_t:0:128", progress=False)
    cache = load_cache(tmp_path / "c", expect_config=TINY_CONFIG)
    dec = BatchedSAM2Decoder(model, cache)
    ep = random_episodes(6, 4, 3, 128, 32, seed=11)
    out = dec.decode(ep.image_ids, ep.points, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask, validate=True)
    ref = reference_decode(model, cache, ep.image_ids, ep.points, ep.labels, ep.mask_input, ep.has_mask_input, ep.multimask)
    dl, ds = _max_diff(out, ref)
    assert dl <= FP32_TOL and ds <= FP32_TOL
