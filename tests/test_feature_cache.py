"""Image encoding parity with SAM2's own path, and the on-disk feature cache (round trip,
resume after interruption, atomicity, refusal of another model's cache)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_batch.cache import (
    CacheError,
    CacheMismatchError,
    encode_to_cache,
    load_cache,
    partial_dir,
    size_report,
)
from sam_batch.encoder import IMAGENET_MEAN, IMAGENET_STD, encode_batch, encode_images, feature_shapes, preprocess
from references.sam_fixtures import TINY_CONFIG, synthetic_images, tiny_model

SIZE = 128  # encoder tests run at 128: ~30 ms per hiera_t forward
FP = "random:sam2.1_hiera_t:0:128"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(SIZE)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return synthetic_images(7, seed=3)


def _torchvision_tensor_functional():
    """torchvision's tensor-backend transforms, loaded standalone (the torchvision package does
    not import on this CPU torch, but this file only needs torch)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "transforms" / "_functional_tensor.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("_tv_functional_tensor", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_preprocess_matches_torchvision_tensor_ops(images: list[np.ndarray]) -> None:
    tv = _torchvision_tensor_functional()
    if tv is None:
        pytest.skip("torchvision sources not installed")
    for img in images[:2] + [np.full((SIZE, SIZE, 3), 77, np.uint8)]:
        x = torch.from_numpy(img.transpose(2, 0, 1)).contiguous().to(torch.float32).div(255)  # ToTensor
        if tuple(x.shape[-2:]) != (SIZE, SIZE):  # transforms.functional.resize skips same-size
            x = tv.resize(x, [SIZE, SIZE], interpolation="bilinear", antialias=True)
        want = tv.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
        assert torch.equal(preprocess(img, SIZE), want)


def test_preprocess_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), np.float32), SIZE)
    with pytest.raises(ValueError, match=r"HxWx3.*\(8, 8\)"):
        preprocess(np.zeros((8, 8), np.uint8), SIZE)


def test_encoder_matches_sam2_predictor_path(model: torch.nn.Module, images: list[np.ndarray]) -> None:
    x = torch.stack([preprocess(im, SIZE) for im in images[:2]])
    ours = encode_batch(model, x)
    # SAM2ImagePredictor.set_image_batch, verbatim but for its hard-coded 1024 feature sizes.
    with torch.no_grad():
        backbone_out = model.forward_image(x)
        _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        s = SIZE // 16
        bb_feat_sizes = [(4 * s, 4 * s), (2 * s, 2 * s), (s, s)]
        feats = [
            feat.permute(1, 2, 0).view(2, -1, *feat_size)
            for feat, feat_size in zip(vision_feats[::-1], bb_feat_sizes[::-1])
        ][::-1]
    assert torch.equal(ours.image_embed, feats[-1])
    assert torch.equal(ours.high_res_0, feats[0])
    assert torch.equal(ours.high_res_1, feats[1])
    assert [tuple(t.shape[1:]) for t in ours] == list(feature_shapes(model))


def test_encode_images_in_memory(model: torch.nn.Module, images: list[np.ndarray]) -> None:
    feats = encode_images(model, images[:3], batch_size=2)
    direct = [encode_batch(model, torch.stack([preprocess(im, SIZE) for im in images[s : min(s + 2, 3)]]))
              for s in range(0, 3, 2)]
    for got, want in zip(feats, zip(*direct)):
        assert got.dtype == torch.float16 and torch.equal(got, torch.cat(want).half())


def test_feature_shapes_1024() -> None:
    class Fake:
        image_size, backbone_stride, hidden_dim = 1024, 16, 256

    assert feature_shapes(Fake()) == ((256, 64, 64), (32, 256, 256), (64, 128, 128))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cache_round_trip(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray], dtype: torch.dtype) -> None:
    ids = [f"img{i}" for i in range(5)]
    out = tmp_path / "syn__t"
    meta = encode_to_cache(model, images[:5], ids, out, config_name=TINY_CONFIG, fingerprint=FP,
                           batch_size=2, dtype=dtype, progress=False, extra_meta={"dataset": "synthetic"})
    assert out.is_dir() and not partial_dir(out).exists()
    cache = load_cache(out, "cpu", expect_config=TINY_CONFIG, expect_fingerprint=FP, expect_image_size=SIZE)
    # Same batching as the cache run (results depend on the batch size at float rounding level).
    direct = [encode_batch(model, torch.stack([preprocess(im, SIZE) for im in images[s : min(s + 2, 5)]]))
              for s in range(0, 5, 2)]
    for got, want in zip(cache.features(), zip(*direct)):
        assert got.dtype == dtype
        assert torch.equal(got, torch.cat(want).to(dtype))
    m = json.loads((out / "meta.json").read_text())
    assert m["complete"] and m["image_ids"] == ids and m["dtype"] == str(dtype).split(".")[1]
    assert m["storage_dtype"] == ("uint16" if dtype == torch.bfloat16 else "float16")
    assert m["original_sizes"] == [list(im.shape[:2]) for im in images[:5]]
    assert m["extra"] == {"dataset": "synthetic"} and meta.num_images == 5
    per_image = 2 * sum(int(np.prod(s)) for s in feature_shapes(model))
    assert cache.nbytes == 5 * per_image == 5 * meta.bytes_per_image
    assert f"{per_image / 2**20:.2f} MiB/image" in size_report(meta)
    for f in out.glob("*.npy"):  # plain arrays, no pickle needed
        np.load(f, allow_pickle=False)


def test_resume_after_interruption(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray]) -> None:
    ids = [f"img{i}" for i in range(7)]
    out = tmp_path / "cache"
    loaded: list[int] = []

    def loader(i: int) -> np.ndarray:
        loaded.append(i)
        return images[i]

    def stop_after_two(batch: int, idx: list[int]) -> None:
        if batch == 1:
            raise KeyboardInterrupt("simulated interruption")

    kw = dict(config_name=TINY_CONFIG, fingerprint=FP, batch_size=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        encode_to_cache(model, loader, ids, out, on_batch=stop_after_two, **kw)
    assert loaded == [0, 1, 2, 3]
    # Interrupted: nothing loads as a valid cache.
    assert not out.exists() and partial_dir(out).is_dir()
    with pytest.raises(CacheError, match="does not exist.*unfinished run"):
        load_cache(out)
    with pytest.raises(CacheError, match="unfinished cache"):
        load_cache(partial_dir(out))
    assert np.load(partial_dir(out) / "done.npy").tolist() == [True] * 4 + [False] * 3

    loaded.clear()
    batches: list[list[int]] = []
    encode_to_cache(model, loader, ids, out, on_batch=lambda b, idx: batches.append(idx), **kw)
    # the four finished images are read once to check they did not change, then 4-6 encoded
    assert loaded == [0, 1, 2, 3, 4, 5, 6] and batches == [[4, 5], [6]]
    resumed = load_cache(out, expect_fingerprint=FP)

    encode_to_cache(model, images, ids, tmp_path / "fresh", **kw)
    fresh = load_cache(tmp_path / "fresh")
    for a, b in zip(resumed.features(), fresh.features()):
        assert torch.equal(a, b)
    assert resumed.meta == fresh.meta


def test_incomplete_dir_never_loads(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray]) -> None:
    out = tmp_path / "c"
    encode_to_cache(model, images[:2], ["a", "b"], out, config_name=TINY_CONFIG, fingerprint=FP, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    meta["complete"] = False
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="incomplete"):
        load_cache(out)
    meta["complete"] = True
    (out / "meta.json").write_text(json.dumps(meta))
    np.save(out / "done.npy", np.array([True, False]))
    with pytest.raises(CacheError, match="does not mark every image done.*sam2click-embed"):
        load_cache(out)
    (out / "meta.json").unlink()
    with pytest.raises(CacheError, match="meta.json is missing"):
        load_cache(out)


def test_existing_cache_replaced(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray]) -> None:
    out = tmp_path / "c"
    kw = dict(config_name=TINY_CONFIG, fingerprint=FP, progress=False)
    encode_to_cache(model, images[:2], ["a", "b"], out, **kw)
    encode_to_cache(model, images[2:5], ["c", "d", "e"], out, **kw)
    cache = load_cache(out)
    assert cache.meta["image_ids"] == ["c", "d", "e"] and cache.num_images == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # old copy and .partial gone


def test_complete_cache_of_same_job_is_kept(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray]) -> None:
    out = tmp_path / "c"
    kw = dict(config_name=TINY_CONFIG, fingerprint=FP, progress=False)
    first = encode_to_cache(model, images[:2], ["a", "b"], out, **kw)
    stamp = (out / "image_embed.npy").stat().st_mtime_ns

    loaded: list[int] = []
    batches: list[list[int]] = []

    def loader(i: int) -> np.ndarray:
        loaded.append(i)
        return images[i]

    # each image is read once to check its fingerprint; none is encoded
    assert encode_to_cache(model, loader, ["a", "b"], out, on_batch=lambda b, i: batches.append(i),
                           **kw) == first
    assert loaded == [0, 1] and batches == []
    assert (out / "image_embed.npy").stat().st_mtime_ns == stamp
    encode_to_cache(model, images[:2], ["a", "b"], out, overwrite=True, **kw)
    assert (out / "image_embed.npy").stat().st_mtime_ns != stamp


def test_stale_partial_from_another_job_is_restarted(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray]) -> None:
    out = tmp_path / "c"
    loaded: list[int] = []

    def loader(i: int) -> np.ndarray:
        loaded.append(i)
        return images[i]

    def stop(batch: int, idx: list[int]) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        encode_to_cache(model, loader, ["a", "b"], out, config_name=TINY_CONFIG, fingerprint="random:other:1:128",
                        batch_size=1, progress=False, on_batch=stop)
    assert loaded == [0]
    loaded.clear()
    # Another fingerprint: the half-done partial is refused, named, and kept as it was ...
    before = {p.name: p.read_bytes() for p in partial_dir(out).iterdir()}
    with pytest.raises(CacheMismatchError, match=r"c\.partial holds an interrupted sam2click-embed "
                                                 r"of another job \(SAM2 weights: RANDOM weights "
                                                 r"\(seed 1\) in the cache.*--overwrite"):
        encode_to_cache(model, loader, ["a", "b"], out, config_name=TINY_CONFIG, fingerprint=FP,
                        progress=False)
    assert loaded == [] and {p.name: p.read_bytes() for p in partial_dir(out).iterdir()} == before
    # ... and with overwrite it is discarded and the encoding starts over.
    encode_to_cache(model, loader, ["a", "b"], out, config_name=TINY_CONFIG, fingerprint=FP,
                    progress=False, overwrite=True)
    assert loaded == [0, 1]
    cache = load_cache(out, expect_fingerprint=FP)
    direct = encode_batch(model, torch.stack([preprocess(im, SIZE) for im in images[:2]]))
    assert torch.equal(cache.image_embed, direct.image_embed.half())


def test_cache_from_another_model_refused(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray]) -> None:
    out = tmp_path / "c"
    encode_to_cache(model, images[:1], ["a"], out, config_name=TINY_CONFIG, fingerprint=FP, progress=False)
    with pytest.raises(CacheMismatchError, match=r"config='sam2.1_hiera_t'.*'sam2.1_hiera_b\+' was expected"):
        load_cache(out, expect_config="sam2.1_hiera_b+")
    with pytest.raises(CacheMismatchError, match="fingerprint="):
        load_cache(out, expect_fingerprint="sha256:abc")
    with pytest.raises(CacheMismatchError, match="image_size=128"):
        load_cache(out, expect_image_size=1024)


def test_encode_input_errors(tmp_path: Path, model: torch.nn.Module, images: list[np.ndarray]) -> None:
    kw = dict(config_name=TINY_CONFIG, fingerprint=FP, progress=False)
    with pytest.raises(ValueError, match="2 images but 3 ids"):
        encode_to_cache(model, images[:2], ["a", "b", "c"], tmp_path / "x", **kw)
    with pytest.raises(ValueError, match="unique"):
        encode_to_cache(model, images[:2], ["a", "a"], tmp_path / "x", **kw)
    with pytest.raises(ValueError, match="torch.float16 or torch.bfloat16"):
        encode_to_cache(model, images[:2], ["a", "b"], tmp_path / "x", dtype=torch.float32, **kw)
    with pytest.raises(ValueError, match="original_sizes says"):
        encode_to_cache(model, images[:1], ["a"], tmp_path / "x", original_sizes=[(1, 1)], **kw)


# --------------------------------------------------------------------------------------------
# scripts.embed
# --------------------------------------------------------------------------------------------


def _in_memory_dataset(images: list[np.ndarray]):
    from gpu_env.datasets.base import SegDataset

    n = len(images)
    return SegDataset(
        name="inmem", split="all", ids=[f"im{i}" for i in range(n)],
        images=torch.zeros(n, 3, 8, 8, dtype=torch.uint8), masks=torch.zeros(n, 8, 8, dtype=torch.bool),
        original_sizes=[tuple(im.shape[:2]) for im in images],
        load_original=lambda i: (images[i], np.zeros(images[i].shape[:2], bool)),
    )


def test_embed_cli_parses_config() -> None:
    from scripts.embed import default_out, parse

    cfg = parse(["--dataset", "kvasir:/data/Kvasir-SEG", "--sam2-config", "t",
                 "--sam2-image-size", "128", "--dtype", "bfloat16", "--sam2-checkpoint", "w.pt",
                 "--batch-size", "8", "--device", "cpu"])
    m = cfg.model
    assert (m.sam2_config, m.sam2_image_size, cfg.dtype, m.sam2_checkpoint, cfg.batch_size) == (
        "t", 128, "bfloat16", "w.pt", 8)
    assert cfg.device.device == "cpu" and cfg.images.dataset == "kvasir:/data/Kvasir-SEG"
    assert default_out(cfg) == Path("caches/kvasir-all__sam2.1_hiera_t@128")


def test_embed_keeps_its_older_sam2_flags_as_aliases() -> None:
    """``--config``/``--checkpoint``/``--seed``/``--image-size`` (the flags of caches built
    before the SAM2 settings became training's) parse to the same config as the new names."""
    from scripts.embed import parse

    old = parse(["--config", "b+", "--checkpoint", "w.pt", "--seed", "3", "--image-size", "256"])
    new = parse(["--sam2-config", "b+", "--sam2-checkpoint", "w.pt", "--sam2-seed", "3",
                 "--sam2-image-size", "256"])
    assert old == new and old.model.sam2_seed == 3 and old.model.sam2_config == "b+"
    # one declaration: the cache's defaults are training's
    from dataclasses import asdict, fields

    from ppo.config import TrainConfig
    from sam_batch.config import SAM2ModelConfig

    trained = TrainConfig().segmenter
    assert asdict(parse([]).model) == {f.name: getattr(trained, f.name)
                                       for f in fields(SAM2ModelConfig)}


def test_embed_core_on_in_memory_dataset(tmp_path: Path, images: list[np.ndarray]) -> None:
    from ppo.command_options import DeviceConfig, ProgressConfig
    from sam_batch.config import SAM2ModelConfig
    from scripts.embed import EmbedConfig, embed

    ds = _in_memory_dataset(images[:3])
    cfg = EmbedConfig(model=SAM2ModelConfig(sam2_config="t", sam2_image_size=SIZE),
                      device=DeviceConfig("cpu"), batch_size=2, out=tmp_path / "emb",
                      progress=ProgressConfig(False))
    with pytest.warns(UserWarning, match="RANDOM sam2.1_hiera_t weights"):
        out, meta = embed(cfg, dataset=ds)
    cache = load_cache(out, expect_config=TINY_CONFIG, expect_fingerprint=FP)
    assert cache.meta["image_ids"] == ["im0", "im1", "im2"]
    assert cache.meta.extra["dataset"] == "inmem" and cache.meta.extra["embed_config"]["batch_size"] == 2
    direct = [encode_batch(tiny_model(SIZE), torch.stack([preprocess(im, SIZE) for im in images[s : min(s + 2, 3)]]))
              for s in range(0, 3, 2)]
    assert torch.equal(cache.image_embed, torch.cat([d.image_embed for d in direct]).half())


def test_embed_main_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        from gpu_env.datasets import load_dataset  # noqa: F401  (written in parallel)
    except ImportError:
        pytest.skip("gpu_env.datasets.load_dataset not available yet")
    from scripts.embed import main

    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(["--dataset", "synthetic", "--count", "2", "--config", "t", "--image-size", str(SIZE),
                     "--device", "cpu", "--out", str(tmp_path / "syn"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "MiB/image" in printed
    assert load_cache(tmp_path / "syn", expect_fingerprint=FP).num_images == 2
