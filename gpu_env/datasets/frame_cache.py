"""A disk cache of rendered synthetic frames, so that building an env a second time skips the
renderer (about 10 s for the 1,024 frames of the training split on a 2-core CPU).

One entry per (seed, split, count, working size, original size, renderer, torch version, and
the device and CPU instruction set that render, which can change the last bits): the
working-size images (``uint8``) and masks (bit-packed) in ``<key>.npz`` and a record
``<key>.json`` with what they are and a BLAKE2 checksum of both arrays. The key hashes the
source of the renderer and of the resize code, so editing either makes new entries instead of
serving stale frames. Entries are written to a temporary name and renamed, record last; an entry
whose record or checksum does not match is rendered again and replaced. The cache touches only
its own ``synthetic-*`` files in its folder.

``gpu_env.make`` uses it by default (``frame_cache="auto"``: ``$SAM2CLICK_CACHE_DIR/frames`` if
that variable is set, else ``$XDG_CACHE_HOME/sam2click/frames``, else
``~/.cache/sam2click/frames``); ``frame_cache=None`` turns it off, a path puts it there. The
training command renders afresh and does not use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["cached_frames", "default_frame_cache", "entry_key"]

_FORMAT = 1


def default_frame_cache() -> Path:
    """The folder ``frame_cache="auto"`` means (see the module docstring)."""
    root = os.environ.get("SAM2CLICK_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "frames"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sam2click" / "frames"


def _renderer_digest() -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in ("synthetic.py", "io.py"):  # the renderer and the resize to the working size
        h.update(Path(__file__).with_name(name).read_bytes())
    return h.hexdigest()


def _renderer_backend(device: torch.device) -> str:
    """Where the frames are rendered, as far as it can change their last bits: the device type
    and the CPU's vector instruction set torch dispatches to (or the GPU's name)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{torch.backends.cpu.get_cpu_capability()}"


def entry_key(seed: int, split: str, count: int, size: int, orig_size: tuple[int, int],
              device: torch.device | str = "cpu") -> dict:
    """What an entry depends on (its record holds this; its file name hashes it)."""
    return {"format": _FORMAT, "seed": int(seed), "split": split, "count": int(count),
            "size": int(size), "orig_size": [int(orig_size[0]), int(orig_size[1])],
            "renderer": _renderer_digest(), "torch": torch.__version__,
            "backend": _renderer_backend(torch.device(device))}


def _checksum(images: np.ndarray, packed: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(images.data)
    h.update(packed.data)
    return h.hexdigest()


def _paths(folder: Path, key: dict) -> tuple[Path, Path]:
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    stem = f"synthetic-{key['split']}-{key['count']}x{key['size']}-{digest}"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def _load(data_path: Path, record_path: Path, key: dict) -> tuple[Tensor, Tensor] | None:
    if not (data_path.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text())
        if record.get("key") != key:
            return None
        with np.load(data_path, allow_pickle=False) as npz:
            images, packed = npz["images"], npz["masks"]
        if _checksum(images, packed) != record.get("blake2b"):
            return None
        shape = tuple(record["mask_shape"])
        masks = np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None  # damaged or foreign: rendered again and replaced
    return torch.from_numpy(images), torch.from_numpy(masks)


def _store(data_path: Path, record_path: Path, key: dict, images: Tensor, masks: Tensor) -> None:
    img = np.ascontiguousarray(images.cpu().numpy())
    msk = masks.cpu().numpy()
    packed = np.packbits(msk.reshape(-1))
    record = {"key": key, "mask_shape": list(msk.shape), "blake2b": _checksum(img, packed),
              "bytes": int(img.nbytes + packed.nbytes)}
    data_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = data_path.with_name(f".{data_path.name}.{os.getpid()}.tmp")
    tmp_record = record_path.with_name(f".{record_path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, images=img, masks=packed)
        os.replace(tmp, data_path)
        tmp_record.write_text(json.dumps(record, indent=1))
        os.replace(tmp_record, record_path)
    finally:
        for path in (tmp, tmp_record):
            if path.exists():
                path.unlink()


def cached_frames(folder: Path | None, key: dict, render: Callable[[], tuple[Tensor, Tensor]],
                  progress: bool = False) -> tuple[Tensor, Tensor]:
    """``render()``'s ``(images, masks)``, from ``folder`` when an intact entry for ``key`` is
    there, else rendered and stored (``folder=None``: rendered, nothing stored). A cache that
    cannot be written is skipped with a warning; the frames are returned all the same."""
    if folder is None:
        return render()
    folder = Path(folder).expanduser()
    data_path, record_path = _paths(folder, key)
    hit = _load(data_path, record_path, key)
    if hit is not None:
        return hit
    images, masks = render()
    try:
        _store(data_path, record_path, key, images, masks)
    except OSError as err:
        warnings.warn(f"could not write the frame cache {data_path} ({err}); the frames were "
                      f"rendered and are used, but will be rendered again next time. Pass "
                      f"frame_cache=None to skip the cache, or a writable folder.", stacklevel=3)
    else:
        if progress:
            mb = (images.numel() + (masks.numel() + 7) // 8) / 2**20
            print(f"cached {key['count']} rendered frames ({mb:.0f} MB) in {data_path}; later "
                  f"builds load them (frame_cache=None turns the cache off).", file=sys.stderr)
    return images, masks
