"""The disk cache of rendered synthetic frames: a hit returns the rendered frames bit for bit,
a damaged or foreign entry is rendered again, nothing else in the folder is touched, an
unwritable folder only costs a warning."""

import json
import os
from pathlib import Path

import pytest
import torch

from gpu_env.datasets.frame_cache import cached_frames, default_frame_cache, entry_key
from gpu_env.datasets.synthetic import load_synthetic
from gpu_env.make import make


def _load(folder, **kw):
    return load_synthetic("val", size=32, count=5, frame_cache=folder, **kw)


def test_a_hit_is_the_rendered_frames_bit_for_bit(tmp_path):
    fresh = load_synthetic("val", size=32, count=5)
    first = _load(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npz")
    second = _load(tmp_path)
    for ds in (first, second):
        assert torch.equal(ds.images, fresh.images) and torch.equal(ds.masks, fresh.masks)
    assert second.ids == fresh.ids and second.name == fresh.name


def test_a_hit_does_not_render(tmp_path, monkeypatch):
    _load(tmp_path)
    import gpu_env.datasets.synthetic as syn

    def refuse(*a, **k):
        raise AssertionError("rendered although the cache holds the frames")

    monkeypatch.setattr(syn, "render_frames", refuse)
    _load(tmp_path)  # served from the cache
    with pytest.raises(AssertionError, match="rendered although"):
        load_synthetic("val", size=32, count=6, frame_cache=tmp_path)  # another entry


def test_each_setting_has_its_own_entry(tmp_path):
    _load(tmp_path)
    load_synthetic("val", size=32, count=4, frame_cache=tmp_path)
    load_synthetic("test", size=32, count=5, frame_cache=tmp_path)
    load_synthetic("val", size=48, count=5, frame_cache=tmp_path)
    load_synthetic("val", size=32, count=5, seed=3, frame_cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 5


@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate", "record_of_another_key", "no_record"])
def test_a_damaged_entry_is_rendered_again_and_replaced(tmp_path, damage):
    fresh = _load(None)
    _load(tmp_path)
    data = next(tmp_path.glob("*.npz"))
    record = data.with_suffix(".json")
    if damage == "flip_a_byte":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:1000])
    elif damage == "record_of_another_key":
        rec = json.loads(record.read_text())
        rec["key"]["count"] = 99
        record.write_text(json.dumps(rec))
    else:
        record.unlink()
    again = _load(tmp_path)
    assert torch.equal(again.images, fresh.images) and torch.equal(again.masks, fresh.masks)
    assert json.loads(record.read_text())["key"]["count"] == 5  # replaced by an intact entry
    assert _load(tmp_path).images.equal(fresh.images)


def test_the_cache_touches_only_its_own_files(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("keep me")
    other = tmp_path / "data.npz"
    other.write_bytes(b"not a cache entry")
    _load(tmp_path)
    _load(tmp_path)
    assert mine.read_text() == "keep me" and other.read_bytes() == b"not a cache entry"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_an_unwritable_folder_warns_and_still_returns_the_frames(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    key = entry_key(0, "val", 2, 32, (288, 352))
    frames = (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.ones(2, 32, 32, dtype=torch.bool))
    with pytest.warns(UserWarning, match="could not write the frame cache"):
        images, masks = cached_frames(blocker / "frames", key, lambda: frames)
    assert images is frames[0] and masks is frames[1]
    assert blocker.read_text().startswith("a file")


def test_the_key_follows_the_renderer_source():
    key = entry_key(0, "train", 8, 64, (288, 352))
    import gpu_env.datasets.synthetic as syn

    source = Path(syn.__file__).read_bytes()
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(source)
    h.update(Path(syn.__file__).with_name("io.py").read_bytes())
    assert key["renderer"] == h.hexdigest() and key["torch"] == torch.__version__
    assert key["backend"] == f"cpu:{torch.backends.cpu.get_cpu_capability()}"


def test_default_folder_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAM2CLICK_CACHE_DIR", str(tmp_path / "c"))
    assert default_frame_cache() == tmp_path / "c" / "frames"
    monkeypatch.delenv("SAM2CLICK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_frame_cache() == tmp_path / "x" / "sam2click" / "frames"


def test_make_uses_the_cache_and_refuses_it_where_nothing_is_rendered(tmp_path):
    env = make(images=4, image_size=64, obs_size=32, mask_prior=None, frame_cache=tmp_path,
               progress=False)
    assert len(list(tmp_path.glob("synthetic-train-4x64-*.npz"))) == 1
    again = make(images=4, image_size=64, obs_size=32, mask_prior=None, frame_cache=tmp_path,
                 progress=False)
    assert torch.equal(env.rgb, again.rgb) and torch.equal(env.gt, again.gt)
    default = default_frame_cache()
    before = sorted(default.glob("*")) if default.exists() else []
    make(images=3, image_size=64, obs_size=32, mask_prior=None, frame_cache=None, progress=False)
    assert (sorted(default.glob("*")) if default.exists() else []) == before
    with pytest.raises(TypeError, match="frame_cache"):
        make(dataset=load_synthetic("val", size=64, count=4), mask_prior=None, obs_size=32,
             frame_cache=tmp_path, progress=False)


def test_the_test_session_does_not_write_to_the_users_cache():
    assert "SAM2CLICK_CACHE_DIR" in os.environ
    assert Path(os.environ["SAM2CLICK_CACHE_DIR"]) != Path.home() / ".cache" / "sam2click"
