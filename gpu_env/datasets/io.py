"""Reading, validating and resizing image/mask pairs, shared by every dataset source.

Conventions fixed here (and documented in the errors they raise):

* Images are read with Pillow and converted to 8-bit RGB (greyscale/palette/RGBA are converted).
  16-bit greyscale is scaled by ``>> 8``, except that one whose maximum is at most 4095 is read
  as a 12-bit image stored in 16 bits (the usual depth of medical and scientific sensors) and
  scaled by ``>> 4``, with a warning naming the file: scaling it as 16-bit would leave it nearly
  black, while a genuine 16-bit image that never exceeds 1/16 of its range is implausible.
* Masks are reduced to one grey channel: the max over the colour channels (so a red or white
  mask on black both work). A mask with an alpha channel is composited over black (colour
  times alpha), and one whose colour channels are uniform is read from its alpha channel alone
  (a mask drawn only in transparency). A mask whose values are all in ``{0, 1}`` is a label
  image (``1`` = foreground). Otherwise it is thresholded at 128 (``>= 128`` is foreground)
  after scaling to 8 bits; a 16-bit mask whose values stay within ``[0, 255]`` is already on
  the 8-bit scale (a 0/255 mask saved in 16 bits), a wider one is scaled by ``>> 8``.
* Binary-like rule: lossy (JPEG) masks have mid-grey values only along their edges. A mask is
  rejected when more than ``MAX_AMBIGUOUS_FRACTION`` (5 %) of its pixels are *ambiguous*, i.e.
  more than ``AMBIGUOUS_MARGIN`` (64) grey levels away from both 0 and 255 -- that is a grey
  photo, a probability map or a soft matte, not a mask.
* Working copies are square ``size x size`` (the SAM2 frame squashes the aspect ratio too):
  images by bilinear interpolation with antialiasing (an area-like filter when shrinking),
  masks by area averaging then ``>= 0.5`` (a working pixel is foreground when at least half of
  the original pixels it covers are).
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

TWELVE_BIT_MAX = 4095
"""A 16-bit greyscale image whose maximum is at most this is read as 12-bit."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File name endings read as images or masks (case-insensitive)."""
MASK_THRESHOLD = 128
"""8-bit grey level from which a mask pixel is foreground."""
AMBIGUOUS_MARGIN = 64
"""A grey value in ``[64, 192)`` is ambiguous (neither near 0 nor near 255)."""
MAX_AMBIGUOUS_FRACTION = 0.05
"""Largest fraction of ambiguous pixels a mask may have and still count as binary."""


class DatasetError(ValueError):
    """A dataset on disk (or its split/arguments) cannot be used; the message says which file."""


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated file must fail here, naming the file
    except Image.DecompressionBombError as err:
        # Pillow refuses to decode more than 2 x Image.MAX_IMAGE_PIXELS pixels (a file that
        # claims a huge size could exhaust memory); say which file and what to do.
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        size = f" ({int(claimed.group(1)):,} pixels)" if claimed else ""
        raise DatasetError(
            f"{path} is too large to read{size}: Pillow refuses images over "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, as decoding one could exhaust "
            "memory. Downscale it (SAM2 works at 1024 x 1024) or remove it from the dataset."
        ) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path}: {err}. Replace or remove the file.") from err
    return img


def read_image(path: str | Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB of the image file at ``path``."""
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N") or (img.mode == "I" and _fits_16(img)):
        return np.repeat(_sixteen_to_8(np.asarray(img).astype(np.uint16), path)[..., None], 3, axis=-1)
    if img.mode in ("I", "F"):
        raise DatasetError(
            f"{path}: image mode {img.mode!r} (32-bit integer/float) is not supported; "
            "save it as 8-bit RGB or greyscale PNG/JPEG/TIFF."
        )
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _fits_16(img: Image.Image) -> bool:
    """Pillow opens some 16-bit PNGs as 32-bit mode ``I``; those hold values in ``[0, 65535]``."""
    lo, hi = img.getextrema()
    return 0 <= lo and hi <= 0xFFFF


def _sixteen_to_8(arr: np.ndarray, path: Path) -> np.ndarray:
    """8-bit grey of a 16-bit grey image (12-bit content detected; see the module docstring)."""
    if arr.size and int(arr.max()) <= TWELVE_BIT_MAX:
        warnings.warn(
            f"{path}: 16-bit image with maximum {int(arr.max())} <= {TWELVE_BIT_MAX}: read as "
            "12-bit (scaled by 1/16 to 8 bits, not 1/256). Re-save it as 8-bit if that is wrong.",
            stacklevel=3,
        )
        return (arr >> 4).astype(np.uint8)
    return (arr >> 8).astype(np.uint8)


def _grey(arr: np.ndarray, path: Path) -> np.ndarray:
    """One channel of a mask array: the max over colour channels, composited over black by the
    alpha channel when there is one, or the alpha channel itself when the colour is uniform."""
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # LA / RGBA
        colour, alpha = arr[..., : arr.shape[-1] - 1].max(axis=-1), arr[..., -1]
        if colour.min() == colour.max() and alpha.min() != alpha.max():
            return alpha  # drawn only in the alpha channel
        if alpha.min() != alpha.max():
            top = np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else 1.0
            return (colour.astype(np.float64) * (alpha / top)).round().astype(arr.dtype)
        return colour
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] >= 3 else arr[..., 0]
    if arr.ndim != 2:
        raise DatasetError(f"{path}: mask has shape {arr.shape}; expected H x W or H x W x C.")
    return arr


def binarize_mask(raw: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """``H x W`` bool foreground of a raw mask array, by the rules in the module docstring.

    Raises ``DatasetError`` (naming ``path``) for a mask that is not binary-like.
    """
    path = Path(path)
    grey = _grey(np.asarray(raw), path)
    if grey.dtype == bool:
        return grey.copy()
    if np.issubdtype(grey.dtype, np.integer) and grey.min() >= 0 and grey.max() <= 1:
        return grey == 1  # 0/1 label image
    if grey.dtype == np.uint8:
        grey8 = grey
    elif np.issubdtype(grey.dtype, np.integer) and grey.min() >= 0 and grey.max() <= 255:
        grey8 = grey.astype(np.uint8)  # 8-bit values in a wider container (a 16-bit 0/255 mask)
    elif np.issubdtype(grey.dtype, np.integer) and grey.min() >= 0 and grey.max() <= 0xFFFF:
        grey8 = (grey >> 8).astype(np.uint8)
    elif np.issubdtype(grey.dtype, np.floating) and grey.min() >= 0.0 and grey.max() <= 1.0:
        grey8 = np.round(grey * 255.0).astype(np.uint8)
    else:
        raise DatasetError(
            f"{path}: mask dtype {grey.dtype} with values in [{grey.min()}, {grey.max()}] "
            "is not a binary mask; expected 8-bit 0/255 (or 0/1 labels)."
        )
    ambiguous = (grey8 >= AMBIGUOUS_MARGIN) & (grey8 < 256 - AMBIGUOUS_MARGIN)
    fraction = float(ambiguous.mean())
    if fraction > MAX_AMBIGUOUS_FRACTION:
        raise DatasetError(
            f"{path}: mask is not binary-like: {fraction:.1%} of its pixels are mid-grey "
            f"(values in [{AMBIGUOUS_MARGIN}, {256 - AMBIGUOUS_MARGIN})), more than the "
            f"{MAX_AMBIGUOUS_FRACTION:.0%} that JPEG edge noise explains. Is it an image or a "
            "soft map? Save masks as 0/255 (or 0/1) images."
        )
    return grey8 >= MASK_THRESHOLD


def read_mask(path: str | Path) -> np.ndarray:
    """``H x W`` bool mask of the file at ``path`` (see ``binarize_mask``)."""
    path = Path(path)
    img = _open(path)
    if img.mode == "P":  # palette indices are not grey levels
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    return binarize_mask(np.asarray(img), path)


def list_images(folder: Path) -> dict[str, Path]:
    """``stem -> path`` of the image files in ``folder`` (hidden and non-image files ignored).

    Raises ``DatasetError`` if two files share a stem (``a.png`` and ``a.jpg``).
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_symlink():
            _check_link(path)
        if not path.is_file():
            continue
        if path.stem in found:
            raise DatasetError(
                f"{found[path.stem]} and {path} have the same stem {path.stem!r}; ids are file "
                "stems, so keep one of them."
            )
        found[path.stem] = path
    return found


def _check_link(path: Path) -> None:
    """Refuse an image-named symbolic link that cannot be followed (a loop, or a target that
    does not exist): it would otherwise vanish from the dataset without a word."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            why = "loops (it leads back to itself through symbolic links)"
        else:
            why = f"points to {os.readlink(path)}, which does not exist"
        raise DatasetError(
            f"{path} is a symbolic link that {why}; it cannot be read as an image or mask. "
            "Point it at the file or remove it."
        ) from err


def resize_images(images: Tensor, size: int) -> Tensor:
    """``[N, 3, H, W]`` uint8 -> ``[N, 3, size, size]`` uint8 (bilinear, antialiased)."""
    if images.shape[-2:] == (size, size):
        return images.clone()
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize_masks(masks: Tensor, size: int) -> Tensor:
    """``[N, H, W]`` bool -> ``[N, size, size]`` bool (area average, then ``>= 0.5``)."""
    if masks.shape[-2:] == (size, size):
        return masks.clone()
    x = F.interpolate(masks[:, None].float(), size=(size, size), mode="area")
    return x[:, 0] >= 0.5


def check_nonempty(masks: Tensor, ids: Sequence[str], where: str) -> None:
    """Raise ``DatasetError`` naming every id whose ``[N, S, S]`` mask has zero area."""
    empty = (masks.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        names = [ids[i] for i in empty]
        shown = ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else "")
        raise DatasetError(
            f"{where}: {len(names)} mask(s) have zero area: {shown}. An episode needs a "
            "foreground to click on; remove these images or fix their masks."
        )
