"""The feature cache writes only into folders of its own and knows its images: a folder holding
anything else is refused whatever the flags, a cache of another job is refused unless
overwrite, a missing done mask is repaired, and images changed, added or removed on disk are
named, refused on load and re-encoded alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_batch.cache import (CacheError, CacheMismatchError, ForeignFolderError, encode_to_cache,
                             load_cache, partial_dir)
from references.sam_fixtures import TINY_CONFIG, synthetic_images, tiny_model
from tests.folders import copy_folder, snapshot

SIZE = 128
FP = "random:sam2.1_hiera_t:0:128"
IDS = ["a", "b", "c"]
KW = dict(config_name=TINY_CONFIG, fingerprint=FP, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(SIZE)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return synthetic_images(5, seed=11)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, model, images) -> Path:
    out = tmp_path_factory.mktemp("clean") / "cache"
    encode_to_cache(model, images[:3], IDS, out, **KW)
    return out


def _copy(clean: Path, tmp_path: Path) -> Path:
    return copy_folder(clean, tmp_path, "cache")


def _run_folder(d: Path) -> dict[str, bytes]:
    """A training run's folder, as a user has it."""
    (d / "eval").mkdir(parents=True)
    (d / "tb").mkdir()
    for name, data in {"best.pt": b"best", "last.pt": b"last", "ckpt_3.pt": b"3",
                       "config.json": b"{}", "eval/results.json": b"[]", "tb/events": b"e"}.items():
        (d / name).write_bytes(data)
    return snapshot(d)


# ---- folders that are not a cache ----------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_holding_other_files_is_never_written(tmp_path: Path, model, images,
                                                       overwrite: bool) -> None:
    out = tmp_path / "run"
    before = _run_folder(out)
    with pytest.raises(ForeignFolderError, match=r"run is not a feature cache folder: it holds "
                                                 r"best\.pt, ckpt_3\.pt, config\.json, eval/.*"
                                                 r"--overwrite does not change that.*--out"):
        encode_to_cache(model, images[:3], IDS, out, overwrite=overwrite, **KW)
    assert snapshot(out) == before
    assert not partial_dir(out).exists()


def test_a_note_beside_a_cache_makes_the_folder_foreign(tmp_path: Path, clean: Path, model,
                                                        images) -> None:
    out = _copy(clean, tmp_path)
    (out / "notes.txt").write_text("keep me")
    before = snapshot(out)
    with pytest.raises(ForeignFolderError, match="notes.txt"):
        encode_to_cache(model, images[:3], IDS, out, overwrite=True, **KW)
    assert snapshot(out) == before


def test_a_partial_folder_holding_other_files_is_refused(tmp_path: Path, model, images) -> None:
    out = tmp_path / "cache"
    partial_dir(out).mkdir()
    (partial_dir(out) / "mine.txt").write_text("x")
    with pytest.raises(ForeignFolderError, match=r"cache\.partial is not a feature cache folder.*mine\.txt"):
        encode_to_cache(model, images[:3], IDS, out, overwrite=True, **KW)
    assert (partial_dir(out) / "mine.txt").read_text() == "x" and not out.exists()


def test_an_empty_folder_is_used(tmp_path: Path, model, images) -> None:
    out = tmp_path / "cache"
    out.mkdir()
    encode_to_cache(model, images[:3], IDS, out, **KW)
    assert load_cache(out).num_images == 3


def test_embed_command_refuses_a_run_folder_before_any_work(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from scripts.embed import main

    out = tmp_path / "run"
    before = _run_folder(out)
    args = ["--dataset", "synthetic", "--count", "2", "--sam2-config", "t", "--sam2-image-size",
            str(SIZE), "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is not a feature cache folder" in err and "best.pt" in err and "RANDOM" not in err
    assert snapshot(out) == before


# ---- a cache of another job ----------------------------------------------------------------


@pytest.mark.parametrize("change, named", [
    (dict(fingerprint="sha256:" + "ab" * 32), r"SAM2 weights: RANDOM weights \(seed 0\) in the "
                                               r"cache, checkpoint sha256:abab"),
    (dict(extra_meta={"split": "val"}), r"split \(--split\): 'train' in the cache, 'val' now"),
    (dict(dtype=torch.bfloat16), r"feature dtype \(--dtype\): float16 in the cache, bfloat16 now"),
])
def test_a_cache_of_another_job_is_refused_unless_overwrite(tmp_path: Path, model, images,
                                                            change: dict, named: str) -> None:
    out = tmp_path / "cache"
    encode_to_cache(model, images[:3], IDS, out, **{**KW, "extra_meta": {"split": "train"}})
    before = snapshot(out)
    kw = {**KW, "extra_meta": {"split": "train"}, **change}
    with pytest.raises(CacheMismatchError, match=named + r".*Nothing was changed.*"
                                                 r"sam2click-embed --overwrite"):
        encode_to_cache(model, images[:3], IDS, out, **kw)
    assert snapshot(out) == before
    meta = encode_to_cache(model, images[:3], IDS, out, overwrite=True, **kw)
    assert load_cache(out).meta == meta and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_cache_of_another_image_size_is_refused(tmp_path: Path, clean: Path, images) -> None:
    out = _copy(clean, tmp_path)
    with pytest.raises(CacheMismatchError, match=r"SAM2 image size: 128 in the cache, 256 now"):
        encode_to_cache(tiny_model(256), images[:3], IDS, out, **{**KW, "fingerprint": "random:sam2.1_hiera_t:0:256"})


def test_an_unreadable_meta_is_refused_unless_overwrite(tmp_path: Path, clean: Path, model, images) -> None:
    out = _copy(clean, tmp_path)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(CacheMismatchError, match=r"damaged feature cache.*cannot be told.*--overwrite"):
        encode_to_cache(model, images[:3], IDS, out, **KW)
    encode_to_cache(model, images[:3], IDS, out, overwrite=True, **KW)
    assert load_cache(out).num_images == 3


# ---- damage the re-run repairs -------------------------------------------------------------


def test_missing_done_mask_is_named_and_repaired(tmp_path: Path, clean: Path, model, images) -> None:
    out = _copy(clean, tmp_path)
    (out / "done.npy").unlink()
    with pytest.raises(CacheError, match=r"done\.npy is missing.*re-run `sam2click-embed`"):
        load_cache(out)
    notes: list[str] = []
    encode_to_cache(model, images[:3], IDS, out, notes=notes, **KW)
    assert any("done.npy was missing; rewritten" in n for n in notes), notes
    assert snapshot(out) == snapshot(clean)
    notes.clear()
    encode_to_cache(model, images[:3], IDS, out, notes=notes, **KW)
    assert notes == []  # sound: nothing to say


# ---- images changed, added or removed ------------------------------------------------------


def _loader(images: list[np.ndarray], loaded: list[int]):
    def load(i: int) -> np.ndarray:
        loaded.append(i)
        return images[i]
    return load


def test_changed_image_is_refused_on_load_and_reencoded_alone(tmp_path: Path, clean: Path, model,
                                                              images) -> None:
    out = _copy(clean, tmp_path)
    now = [images[0], images[1], images[2].copy()]
    now[2][5, 5] ^= 0xFF  # one pixel of 'c' changed on disk, same id
    load_cache(out, images=lambda j: images[j])  # the pixels it was built from: accepted
    with pytest.raises(CacheError, match=r"other pixels than today's for 1 image\(s\): 'c' "
                                         r"changed.*sam2click-embed.*only the changed images"):
        load_cache(out, images=lambda j: now[j])
    with pytest.raises(CacheError, match="'c' changed"):  # a shard holding it
        load_cache(out, indices=[2, 0], images=lambda j: now[[2, 0][j]])
    assert load_cache(out, indices=[0, 1], images=lambda j: now[j]).num_images == 2

    loaded: list[int] = []
    notes: list[str] = []
    encode_to_cache(model, _loader(now, loaded), IDS, out, notes=notes, **KW)
    assert loaded == [0, 1, 2] + [2]  # all fingerprinted, then 'c' alone (its batch) encoded
    assert any("1 image(s) changed on disk" in n and "'c'" in n for n in notes), notes
    fresh = tmp_path / "fresh"
    encode_to_cache(model, now, IDS, fresh, **KW)
    assert snapshot(out) == snapshot(fresh)  # as if built from today's images
    load_cache(out, images=lambda j: now[j])


def test_added_and_removed_images_reuse_the_unchanged_features(tmp_path: Path, clean: Path, model,
                                                               images) -> None:
    out = _copy(clean, tmp_path)
    old = load_cache(out)
    ids = ["a", "c", "d"]  # 'b' removed, 'd' added
    now = [images[0], images[2], images[3]]
    loaded: list[int] = []
    notes: list[str] = []
    encode_to_cache(model, _loader(now, loaded), ids, out, notes=notes, **KW)
    assert loaded == [0, 1, 2] + [2]  # only 'd' is encoded
    assert any("1 added ('d'); 1 removed ('b')" in n for n in notes), notes
    assert any("copied the features of 2 unchanged image(s)" in n for n in notes), notes
    new = load_cache(out, images=lambda j: now[j])
    assert new.meta.image_ids == ids
    assert torch.equal(new.image_embed[:2], old.image_embed[[0, 2]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_interrupted_run_reencodes_images_changed_since(tmp_path: Path, model, images) -> None:
    out = tmp_path / "cache"

    def stop(batch: int, idx: list[int]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_to_cache(model, images[:3], IDS, out, on_batch=stop, **KW)  # 'a', 'b' done
    now = [images[0], images[4], images[2]]  # 'b' replaced meanwhile
    loaded: list[int] = []
    notes: list[str] = []
    encode_to_cache(model, _loader(now, loaded), IDS, out, notes=notes, **KW)
    assert loaded == [0, 1] + [1, 2]
    assert any("'b'" in n and "changed on disk" in n for n in notes), notes
    load_cache(out, images=lambda j: now[j])


def test_old_cache_without_fingerprints_records_them(tmp_path: Path, clean: Path, model, images) -> None:
    out = _copy(clean, tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    del meta["image_hashes"]
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    load_cache(out, images=lambda j: images[j])  # cannot check: a warning, not a refusal
    notes: list[str] = []
    encode_to_cache(model, images[:3], IDS, out, notes=notes, **KW)
    assert any("recorded the fingerprints" in n for n in notes)
    assert json.loads((out / "meta.json").read_text()) == json.loads((clean / "meta.json").read_text())


def test_build_segmenter_names_added_and_removed_ids(tmp_path: Path, clean: Path) -> None:
    from sam_batch.config import SegmenterConfig
    from sam_batch.factory import build_segmenter

    cfg = SegmenterConfig(kind="sam2", sam2_config="t", sam2_image_size=SIZE,
                          feature_cache=str(clean))
    with pytest.raises(ValueError, match=r"holds other images than split 'val'.*1 added \('x'\); "
                                         r"1 removed \('b'\).*sam2click-embed"):
        build_segmenter(cfg, torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.device("cpu"),
                        image_ids=["a", "x", "c"], split="val")
