"""The feature cache checks itself: damaged files are named on load, re-encoding repairs only
the damaged images (byte-identical to a clean encode), old caches without checksums still load,
and a full disk is a clear error that leaves the previous cache intact."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_batch import cache_files
from sam_batch.atomic_io import DiskFullError
from sam_batch.cache import CacheError, encode_to_cache, find_damage, load_cache
from references.sam_fixtures import TINY_CONFIG, synthetic_images, tiny_model
from tests.folders import copy_folder

SIZE = 128
FP = "random:sam2.1_hiera_t:0:128"
IDS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(SIZE)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return synthetic_images(3, seed=5)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, model, images) -> Path:
    out = tmp_path_factory.mktemp("clean") / "cache"
    encode_to_cache(model, images, IDS, out, config_name=TINY_CONFIG, fingerprint=FP, batch_size=2,
                    progress=False)
    return out


def _copy(clean: Path, tmp_path: Path) -> Path:
    return copy_folder(clean, tmp_path, "cache")


def _row_offset(f: Path, row: int) -> int:
    a = np.load(f, mmap_mode="r")
    return a.offset + row * a[0].nbytes


def _flip_byte(f: Path, pos: int) -> None:
    with open(f, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ 0xFF]))


def _reencode(model, images, out: Path, loaded: list[int]) -> None:
    def loader(i: int) -> np.ndarray:
        loaded.append(i)
        return images[i]

    encode_to_cache(model, loader, IDS, out, config_name=TINY_CONFIG, fingerprint=FP, batch_size=2,
                    progress=False)


def _assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_meta_records_sizes_and_row_checksums(clean: Path) -> None:
    meta = json.loads((clean / "meta.json").read_text())
    for k in ("image_embed", "high_res_0", "high_res_1"):
        rec = meta["files"][f"{k}.npy"]
        assert rec["bytes"] == (clean / f"{k}.npy").stat().st_size
        assert rec["row_crc32"] == cache_files.row_crc32(np.load(clean / f"{k}.npy")).tolist()


def test_truncated_npy_is_named(tmp_path: Path, clean: Path) -> None:
    out = _copy(clean, tmp_path)
    f = out / "high_res_0.npy"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size - 1000)
    with pytest.raises(CacheError, match=r"high_res_0\.npy is truncated.*sam2click-embed.*re-encodes only"):
        load_cache(out)


def test_object_dtype_npy_is_named(tmp_path: Path, clean: Path) -> None:
    out = _copy(clean, tmp_path)
    np.save(out / "image_embed.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(CacheError, match=r"image_embed\.npy holds Python objects.*sam2click-embed"):
        load_cache(out)


def test_flipped_byte_names_file_and_image(tmp_path: Path, clean: Path) -> None:
    out = _copy(clean, tmp_path)
    f = out / "high_res_1.npy"
    _flip_byte(f, _row_offset(f, 1) + 123)
    with pytest.raises(CacheError, match=r"high_res_1\.npy: image\(s\) 'b' fail their CRC-32"):
        load_cache(out)
    assert load_cache(out, indices=[0, 2]).num_images == 2  # the sound rows still load
    assert load_cache(out, verify=False).num_images == 3
    assert list(find_damage(out)) == ["high_res_1"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "object"])
def test_reembed_repairs_only_damaged_images(tmp_path: Path, clean: Path, model, images, damage: str) -> None:
    out = _copy(clean, tmp_path)
    f = out / "image_embed.npy"
    # The clean encode batched [a, b], [c]; a damaged image is re-encoded inside its own batch
    # (the encoder's floats depend on batch mates), and only damaged rows are written.
    if damage == "flip":  # one bit-flipped row: only its image is re-encoded
        _flip_byte(f, _row_offset(f, 2) + 7)
        want = [2]
    elif damage == "truncate":  # cut inside row 1: rows 1 and 2 are lost, row 0 is kept
        with open(f, "r+b") as fh:
            fh.truncate(_row_offset(f, 1) + 10)
        want = [0, 1, 2]
    else:  # an unusable header: every row of that file
        np.save(f, np.array([None] * 3, dtype=object), allow_pickle=True)
        want = [0, 1, 2]
    before = {n: (out / n).stat().st_mtime_ns for n in ("high_res_0.npy", "high_res_1.npy")}
    loaded: list[int] = []
    _reencode(model, images, out, loaded)
    # every image is read once to check its fingerprint, then the damaged batch is encoded
    assert loaded == [0, 1, 2] + want
    _assert_same_files(out, clean)  # byte-identical to a clean encode, meta.json included
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before  # sound files untouched
    load_cache(out)
    loaded.clear()
    _reencode(model, images, out, loaded)  # sound now: nothing to do but read the images
    assert loaded == [0, 1, 2]


def test_old_cache_without_checksums(tmp_path: Path, clean: Path, model, images,
                                     caplog: pytest.LogCaptureFixture) -> None:
    out = _copy(clean, tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    del meta["files"]
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    with caplog.at_level(logging.WARNING):
        cache = load_cache(out)
    assert cache.num_images == 3 and "no checksums" in caplog.text
    f = out / "high_res_1.npy"
    data = f.read_bytes()
    f.write_bytes(data[:-5])  # sizes are still checked
    with pytest.raises(CacheError, match=r"high_res_1\.npy is truncated"):
        load_cache(out)
    f.write_bytes(data)
    loaded: list[int] = []
    _reencode(model, images, out, loaded)  # records the checksums, encodes nothing
    assert loaded == [0, 1, 2]
    _assert_same_files(out, clean)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_writing_rows(tmp_path: Path, clean: Path, model, images,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = _copy(clean, tmp_path)
    monkeypatch.setattr(cache_files.os, "pwrite", _enospc)
    with pytest.raises(DiskFullError, match=r"no space left on the device holding .*cache\.partial: "
                                            r"writing image rows to image_embed\.npy.*previous cache "
                                            r".*intact.*resumes"):
        encode_to_cache(model, images, IDS, out, config_name=TINY_CONFIG, fingerprint=FP,
                        progress=False, overwrite=True)
    monkeypatch.undo()
    _assert_same_files(out, clean)  # the previous cache is intact and loads
    load_cache(out)


def test_full_disk_when_reserving_space(tmp_path: Path, model, images, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(cache_files.os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")
    monkeypatch.setattr(cache_files.os, "posix_fallocate", _enospc)
    loaded: list[int] = []
    with pytest.raises(DiskFullError, match=r"no space left.*reserving \d+ bytes for image_embed\.npy"):
        encode_to_cache(model, lambda i: loaded.append(i) or images[i], IDS, tmp_path / "c",
                        config_name=TINY_CONFIG, fingerprint=FP, progress=False)
    assert loaded == []  # failed before any encoding


def test_full_disk_while_saving_done_mask(tmp_path: Path, model, images, monkeypatch: pytest.MonkeyPatch) -> None:
    from sam_batch import atomic_io

    real = atomic_io.os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(atomic_io.os, "fsync", fsync)
    with pytest.raises(DiskFullError, match="no space left"):
        encode_to_cache(model, images, IDS, tmp_path / "c", config_name=TINY_CONFIG, fingerprint=FP,
                        progress=False, batch_size=1)
    monkeypatch.undo()
    encode_to_cache(model, images, IDS, tmp_path / "c", config_name=TINY_CONFIG, fingerprint=FP,
                    progress=False, batch_size=1)  # resumes
    load_cache(tmp_path / "c")


# --------------------------------------------------------------------------------------------
# scripts.embed
# --------------------------------------------------------------------------------------------


def _embed_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--dataset", "synthetic", "--count", "2", "--image-size", str(SIZE), "--device", "cpu",
            "--out", str(tmp_path / "syn"), "--no-progress", *extra]


def test_embed_accepts_a_config_yaml_path(tmp_path: Path) -> None:
    from sam_batch.model import resolve_config
    from scripts.embed import main

    _, shipped = resolve_config("t")
    mine = tmp_path / "my_tiny.yaml"
    shutil.copy(shipped, mine)
    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(_embed_args(tmp_path, "--config", str(mine))) == 0
    cache = load_cache(tmp_path / "syn", expect_config="my_tiny")
    assert cache.num_images == 2 and cache.meta.fingerprint == f"random:my_tiny:0:{SIZE}"


def test_embed_cuda_without_cuda_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    from scripts.embed import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = _embed_args(tmp_path, "--config", "t")
    args[args.index("--device") + 1] = "cuda"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err
    assert not (tmp_path / "syn").exists()


def test_embed_rerun_repairs_damaged_cache(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from scripts.embed import main

    args = _embed_args(tmp_path, "--config", "t")
    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(args) == 0
    good = {p.name: p.read_bytes() for p in (tmp_path / "syn").iterdir()}
    f = tmp_path / "syn" / "high_res_0.npy"
    f.write_bytes(good["high_res_0.npy"][:-100])  # e.g. a copy to another node cut short
    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(args) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "syn").iterdir()} == good
