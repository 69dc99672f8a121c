"""Datasets: the synthetic generator (determinism, splits, statistics), the Kvasir-SEG and folder
loaders on real-format files written here, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from gpu_env.datasets import DatasetError, SegDataset, load_dataset
from gpu_env.datasets.io import binarize_mask, resize_images, resize_masks

# ----------------------------------------------------------------------------- synthetic


def _syn(split: str = "train", count: int = 20, seed: int = 0, size: int = 64, **kw) -> SegDataset:
    kw.setdefault("orig_size", (72, 88))  # small originals keep these tests fast
    return load_dataset("synthetic", split=split, size=size, count=count, seed=seed, **kw)


def test_synthetic_same_seed_same_pixels_other_seed_differs():
    a, b, c = _syn(seed=3), _syn(seed=3), _syn(seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert a.ids == b.ids == [f"syn-train-{i}" for i in range(20)]
    assert (a.images.float() - c.images.float()).abs().mean() > 10
    assert not torch.equal(a.masks, c.masks)


def test_synthetic_frame_does_not_depend_on_count():
    short, long = _syn(count=5), _syn(count=37)
    assert torch.equal(short.images, long.images[:5]) and torch.equal(short.masks, long.masks[:5])


def test_synthetic_splits_are_disjoint_and_deterministic():
    sets = {s: _syn(split=s, count=16) for s in ("train", "val", "test")}
    hashes = {s: {hash(img.numpy().tobytes()) for img in ds.images} for s, ds in sets.items()}
    assert all(len(h) == 16 for h in hashes.values())  # no repeated frame within a split
    assert not (hashes["train"] & hashes["val"] or hashes["train"] & hashes["test"] or hashes["val"] & hashes["test"])
    assert sets["val"].ids[3] == "syn-val-3"
    assert torch.equal(_syn(split="val", count=16).images, sets["val"].images)


def test_synthetic_shapes_and_originals():
    ds = _syn(count=18, size=96, orig_size=(120, 150))  # 18 > CHUNK: two chunks
    assert ds.images.shape == (18, 3, 96, 96) and ds.images.dtype == torch.uint8
    assert ds.masks.shape == (18, 96, 96) and ds.masks.dtype == torch.bool
    assert ds.original_sizes == [(120, 150)] * 18 and ds.size == 96 and len(ds) == 18
    assert ds.name == "synthetic-s0-120x150"
    image, mask = ds.load_original(17)  # second chunk
    assert image.shape == (120, 150, 3) and image.dtype == np.uint8
    assert mask.shape == (120, 150) and mask.dtype == bool
    # The working copy is the original resized by the shared rules.
    work_img = resize_images(torch.from_numpy(image).permute(2, 0, 1)[None], 96)[0]
    assert (work_img.int() - ds.images[17].int()).abs().max() <= 1
    assert torch.equal(resize_masks(torch.from_numpy(mask)[None], 96)[0], ds.masks[17])
    with pytest.raises(IndexError):
        ds.load_original(18)


def test_synthetic_default_is_non_square_original():
    ds = load_dataset("synthetic", split="train", size=32, count=1)
    assert ds.name == "synthetic" and ds.original_sizes == [(288, 352)]
    assert ds.load_original(0)[0].shape == (288, 352, 3)


@pytest.fixture(scope="module")
def stats_set() -> SegDataset:
    # Half-size originals keep this fast; the statistics do not depend on resolution.
    return load_dataset("synthetic", split="train", size=128, count=160, seed=0, orig_size=(144, 176))


def test_synthetic_mask_area_and_polyp_count(stats_set):
    ds = stats_set
    area = ds.masks.flatten(1).float().mean(1)
    assert area.min() > 0.002 and area.max() < 0.45  # "small to a third of the image"
    assert (area < 0.02).float().mean() > 0.1  # small polyps are common
    assert (area > 0.12).float().mean() > 0.1  # and so are large ones
    counts = np.array([ndimage.label(m.numpy())[1] for m in ds.masks])
    assert counts.min() >= 1 and counts.max() <= 3
    assert 0.15 < (counts > 1).mean() < 0.6  # one to a few polyps


def test_synthetic_looks_like_endoscopy(stats_set):
    ds = stats_set
    img = ds.images.float() / 255
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    visible = img.max(1).values > 0.08  # inside the field of view
    assert (r[visible].mean() > g[visible].mean() + 0.15) and (r[visible].mean() > b[visible].mean() + 0.15)
    # Not flat: texture/shading spread within the wall, and a wide range of polyp contrast.
    wall = visible & ~ds.masks
    wall_std = torch.stack([img[i, :, wall[i]].std(1).mean() for i in range(len(ds))])
    assert wall_std.median() > 0.03
    diff = torch.stack([
        (img[i, :, ds.masks[i]].mean(1) - img[i, :, wall[i]].mean(1)).abs().max() for i in range(len(ds))
    ])
    assert (diff < 0.04).float().mean() > 0.05  # some polyps barely differ from the wall
    assert (diff > 0.10).float().mean() > 0.15  # many are clearly visible (shading adds to this)
    # Specular highlights fall on polyps in some frames and on the wall in others.
    spec = img.min(1).values > 0.85
    on_polyp = (spec & ds.masks).flatten(1).any(1).float().mean()
    on_wall = (spec & wall).flatten(1).any(1).float().mean()
    assert 0.1 < on_polyp < 0.9 and on_wall > 0.4
    # Black field-of-view corners in some frames, full-frame views in others.
    corner = img[:, :, :4, :4].amax((1, 2, 3))
    assert 0.3 < (corner < 0.05).float().mean() < 0.9


def test_synthetic_bad_arguments():
    with pytest.raises(DatasetError, match="split 'tain'"):
        load_dataset("synthetic", split="tain", count=2)
    with pytest.raises(DatasetError, match="count=0"):
        load_dataset("synthetic", split="train", count=0)
    assert issubclass(DatasetError, ValueError)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_synthetic_renders_on_gpu_like_cpu():
    cpu, gpu = _syn(count=16), _syn(count=16, device="cuda")
    assert gpu.images.is_cuda
    assert (gpu.images.cpu().float() - cpu.images.float()).abs().mean() < 0.5
    assert (gpu.masks.cpu() != cpu.masks).float().mean() < 1e-3


# ----------------------------------------------------------------------------- files on disk


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array([200, 110, 90], np.float32) + rng.normal(0, 12, (h, w, 3))
    return base.clip(0, 255).astype(np.uint8)


def _write(path: Path, array: np.ndarray, **save_kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_kw)
    return path


KVASIR_SIZES = {"cju0qkwl35piu0993l0dewei2": (332, 487), "cju0qoxqj9q6s0835b43399p4": (530, 622),
                "cju0roawvklrq0799vmjorwfv": (1072, 1350), "cju0s690hkp960855tjuaqvv0": (576, 720),
                "cju0sr5ghl0nd08789uzf1raf": (400, 400)}


@pytest.fixture()
def kvasir_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A Kvasir-SEG-like folder: JPEG frames of mixed sizes, lossy JPEG masks, train/val lists."""
    root = tmp_path / "Kvasir-SEG"
    truth = {}
    for k, (stem, (h, w)) in enumerate(KVASIR_SIZES.items()):
        mask = _ellipse(h, w, h * 0.45, w * 0.55, h * 0.25, w * 0.2)
        truth[stem] = mask
        _write(root / "images" / f"{stem}.jpg", _frame(h, w, k), quality=90)
        _write(root / "masks" / f"{stem}.jpg", (mask * 255).astype(np.uint8), quality=75)
    stems = list(KVASIR_SIZES)
    (root / "train.txt").write_text("\n".join(stems[:3]) + "\n")
    (root / "val.txt").write_text(f"{stems[4]}.jpg\n\n{stems[3]}\n")  # extension and blank line tolerated
    return root, truth


def test_kvasir_split_files_sizes_and_jpeg_masks(kvasir_dir):
    root, truth = kvasir_dir
    stems = list(KVASIR_SIZES)
    train = load_dataset(f"kvasir:{root}", split="train", size=64)
    assert train.name == "kvasir" and train.ids == stems[:3]
    assert train.images.shape == (3, 3, 64, 64) and train.masks.shape == (3, 64, 64)
    assert train.original_sizes == [KVASIR_SIZES[s] for s in stems[:3]]
    val = load_dataset(str(root), split="val", size=64)  # a bare path that looks like Kvasir
    assert val.name == "kvasir" and val.ids == [stems[4], stems[3]]
    for k, stem in enumerate(stems[:3]):
        image, mask = train.load_original(k)
        assert image.shape == (*KVASIR_SIZES[stem], 3) and mask.shape == KVASIR_SIZES[stem]
        iou = (mask & truth[stem]).sum() / (mask | truth[stem]).sum()
        assert iou > 0.98  # JPEG noise is thresholded away
        small = resize_masks(torch.from_numpy(truth[stem])[None], 64)[0]
        assert (train.masks[k] ^ small).float().mean() < 0.01
    everything = load_dataset(f"kvasir:{root}", split="all", size=32)
    assert everything.ids == sorted(stems)


def test_kvasir_split_file_keyword(kvasir_dir, tmp_path):
    root, _ = kvasir_dir
    listing = tmp_path / "mine.txt"
    listing.write_text("cju0s690hkp960855tjuaqvv0\n")
    ds = load_dataset(f"kvasir:{root}", split="mine", size=32, split_file=listing)
    assert ds.ids == ["cju0s690hkp960855tjuaqvv0"] and ds.split == "mine"


def test_folder_of_mixed_formats(tmp_path):
    root = tmp_path / "my data"
    m1 = _ellipse(90, 120, 40, 60, 20, 30)
    _write(root / "images" / "a.png", _frame(90, 120, 1))
    _write(root / "masks" / "a.png", m1.astype(np.uint8))  # 0/1 label image
    _write(root / "images" / "b.jpeg", _frame(70, 50, 2))
    m2 = _ellipse(70, 50, 35, 25, 15, 12)
    red = np.zeros((70, 50, 3), np.uint8)
    red[m2, 0] = 255  # a coloured mask: the max channel counts
    _write(root / "masks" / "b.tif", red)
    (root / "images" / "notes.txt").write_text("not an image")
    (root / "masks" / ".DS_Store").write_bytes(b"\0")
    ds = load_dataset(str(root), size=48)
    assert ds.name == "my_data" and ds.ids == ["a", "b"] and ds.original_sizes == [(90, 120), (70, 50)]
    assert np.array_equal(ds.load_original(0)[1], m1) and np.array_equal(ds.load_original(1)[1], m2)
    assert ds.to("cpu").images.shape == (2, 3, 48, 48)


def test_binarize_rules():
    grey = np.zeros((40, 40), np.uint8)
    grey[10:30, 10:30] = 255
    assert binarize_mask(grey).sum() == 400
    assert binarize_mask(grey // 255).sum() == 400  # 0/1 labels
    assert binarize_mask(grey.astype(np.uint16) * 257).sum() == 400
    noisy = grey.astype(np.int16) + np.random.default_rng(0).integers(-40, 40, grey.shape)
    assert binarize_mask(noisy.clip(0, 255).astype(np.uint8)).sum() == 400
    soft = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (40, 1))
    with pytest.raises(DatasetError, match="not binary-like"):
        binarize_mask(soft, "soft.png")


# ----------------------------------------------------------------------------- bad input


def _pair(root: Path, stem: str, mask: np.ndarray | None = None, size=(60, 80)) -> None:
    h, w = size
    _write(root / "images" / f"{stem}.png", _frame(h, w, 0))
    if mask is None:
        mask = _ellipse(h, w, h / 2, w / 2, h / 4, w / 4)
    _write(root / "masks" / f"{stem}.png", (mask * 255).astype(np.uint8))


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_dataset(str(tmp_path))


def test_missing_subfolder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"no masks/ subfolder"):
        load_dataset(str(tmp_path))


def test_image_without_mask_names_both(tmp_path):
    _pair(tmp_path, "ok")
    _write(tmp_path / "images" / "lonely.jpg", _frame(30, 30, 0))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path))
    assert str(tmp_path / "images" / "lonely.jpg") in str(err.value)
    assert str(tmp_path / "masks" / "lonely") in str(err.value)


def test_mask_without_image(tmp_path):
    _pair(tmp_path, "ok")
    _write(tmp_path / "masks" / "ghost.png", np.zeros((30, 30), np.uint8))
    with pytest.raises(DatasetError, match="ghost.png has no image"):
        load_dataset(str(tmp_path))


def test_duplicate_stems(tmp_path):
    _pair(tmp_path, "a")
    _write(tmp_path / "images" / "a.jpg", _frame(60, 80, 0))
    with pytest.raises(DatasetError, match="same stem 'a'"):
        load_dataset(str(tmp_path))


def test_non_binary_mask_names_file(tmp_path):
    _pair(tmp_path, "ok")
    _write(tmp_path / "images" / "photo.png", _frame(60, 80, 3))
    _write(tmp_path / "masks" / "photo.png", _frame(60, 80, 3)[..., 1])  # a grey photo as "mask"
    with pytest.raises(DatasetError, match=r"photo\.png: mask is not binary-like"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("content", [b"this is not a jpeg", "truncated"])
def test_unreadable_file_names_file(tmp_path, content):
    _pair(tmp_path, "ok")
    bad = tmp_path / "images" / "broken.jpg"
    if content == "truncated":
        _write(bad, _frame(64, 64, 0), quality=90)
        bad.write_bytes(bad.read_bytes()[:400])
    else:
        bad.write_bytes(content)
    _write(tmp_path / "masks" / "broken.png", (_ellipse(64, 64, 32, 32, 10, 10) * 255).astype(np.uint8))
    with pytest.raises(DatasetError, match=r"cannot read .*broken\.jpg"):
        load_dataset(str(tmp_path))


def test_size_mismatch_names_both(tmp_path):
    _write(tmp_path / "images" / "x.png", _frame(60, 80, 0))
    _write(tmp_path / "masks" / "x.png", (_ellipse(60, 70, 30, 35, 10, 10) * 255).astype(np.uint8))
    with pytest.raises(DatasetError, match=r"x\.png is 80x60 but its mask .*x\.png is 70x60"):
        load_dataset(str(tmp_path))


def test_unknown_split_id_names_id_and_line(tmp_path):
    _pair(tmp_path, "a")
    _pair(tmp_path, "b")
    (tmp_path / "train.txt").write_text("a\nzzz\n")
    with pytest.raises(DatasetError, match=r"train\.txt:2: id 'zzz'"):
        load_dataset(str(tmp_path), split="train")
    (tmp_path / "val.txt").write_text("a\na\n")
    with pytest.raises(DatasetError, match="listed twice"):
        load_dataset(str(tmp_path), split="val")


def test_missing_split_file(tmp_path):
    _pair(tmp_path, "a")
    with pytest.raises(DatasetError, match="split_file="):
        load_dataset(str(tmp_path), split="train")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path), split="train", split_file=tmp_path / "nope.txt")


def test_zero_area_masks_name_every_id(tmp_path):
    _pair(tmp_path, "good")
    _pair(tmp_path, "empty1", np.zeros((60, 80), bool))
    _pair(tmp_path, "empty2", np.zeros((60, 80), bool))
    with pytest.raises(DatasetError, match=r"2 mask\(s\).*zero area.*empty1, empty2"):
        load_dataset(str(tmp_path))


def test_mask_vanishing_at_working_size(tmp_path):
    _pair(tmp_path, "good")
    speck = np.zeros((400, 400), bool)
    speck[200, 200] = True  # one pixel: gone after area resizing to 32
    _pair(tmp_path, "speck", speck, size=(400, 400))
    with pytest.raises(DatasetError, match=r"zero area: speck"):
        load_dataset(str(tmp_path), size=32)


def test_unknown_source():
    with pytest.raises(DatasetError, match="neither 'synthetic'"):
        load_dataset("/definitely/not/here")
    with pytest.raises(DatasetError, match="Kvasir-SEG folder .* does not exist"):
        load_dataset("kvasir:/definitely/not/here")
