"""Drawing helpers for human inspection: mask outlines, click markers and contact sheets.

Everything works on host tensors/arrays and returns ``H x W x 3`` uint8 arrays; nothing here
runs in the hot path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor


def outline(masks: Tensor, width: int = 1) -> Tensor:
    """``[N, H, W]`` bool -> ``[N, H, W]`` bool boundary band (mask minus its erosion)."""
    m = masks[:, None].float()
    eroded = -F.max_pool2d(-m, kernel_size=2 * width + 1, stride=1, padding=width)
    return (m - eroded)[:, 0] > 0.5


def overlay_outlines(
    images: Tensor,
    masks: Tensor,
    color: tuple[int, int, int] = (40, 255, 80),
    width: int = 1,
) -> Tensor:
    """``[N, 3, H, W]`` uint8 with the outline of ``[N, H, W]`` masks drawn in ``color``.

    Masks of another size are resized (nearest) to the images first.
    """
    if masks.shape[-2:] != images.shape[-2:]:
        masks = F.interpolate(masks[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0] > 0.5
    band = outline(masks.bool(), width)[:, None]
    paint = torch.tensor(color, dtype=torch.uint8, device=images.device).view(1, 3, 1, 1)
    return torch.where(band, paint, images)


def draw_points(
    image: np.ndarray,
    points_xy: Sequence[tuple[float, float]],
    positive: Sequence[bool],
    radius: int = 4,
) -> np.ndarray:
    """Copy of an ``H x W x 3`` uint8 image with clicks drawn as dots (green fg, red bg).

    ``points_xy`` are ``(x, y)`` pixel-index coordinates of this image.
    """
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for (x, y), pos in zip(points_xy, positive):
        fill = (30, 220, 60) if pos else (230, 40, 40)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(255, 255, 255))
    return np.asarray(pil)


def contact_sheet(
    tiles: Sequence[np.ndarray],
    cols: int,
    titles: Sequence[str] | None = None,
    pad: int = 4,
    background: int = 24,
) -> np.ndarray:
    """Tiles (``H x W x 3`` uint8, any sizes) laid out row-major in a grid of ``cols`` columns,
    each cell as large as the largest tile, with an optional title line under each tile."""
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile.")
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    text_h = 14 if titles else 0
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((pad + rows * (th + text_h + pad), pad + cols * (tw + pad), 3), background, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = pad + r * (th + text_h + pad), pad + c * (tw + pad)
        sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    if titles:
        pil = Image.fromarray(sheet)
        draw = ImageDraw.Draw(pil)
        for k, title in enumerate(titles):
            r, c = divmod(k, cols)
            draw.text((pad + c * (tw + pad), pad + r * (th + text_h + pad) + th + 1), title, fill=(220, 220, 220))
        sheet = np.asarray(pil)
    return sheet


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an ``H x W x 3`` uint8 array as PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def episode_strip(image: np.ndarray, gt: np.ndarray, episode: dict, input_size: int,
                  size: int = 128) -> np.ndarray:
    """One recorded evaluation episode (``Curves.episodes`` entry) as an ``H x W x 3`` uint8
    strip: after each click, the image with the mask tinted blue, the GT outline in green and
    the clicks so far (green fg, red bg), Dice in the title. ``image [3, h, w]`` uint8 or
    ``[h, w, 3]``; ``gt`` any-size bool; points are in the segmenter's ``input_size`` frame.
    Pure PIL/NumPy (no plotting backend), so training can log it to TensorBoard."""
    img = torch.as_tensor(np.asarray(image))
    if img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.permute(1, 2, 0)
    base = F.interpolate(img.permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear",
                         align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    gt_t = torch.as_tensor(np.asarray(gt)).bool()[None]
    tiles, titles = [], []
    for k, mask in enumerate(episode["masks"]):
        m = F.interpolate(torch.as_tensor(mask)[None, None].float(), size=(size, size),
                          mode="nearest")[0, 0] > 0.5
        tinted = base.clone()
        blue = torch.tensor([40, 90, 255], dtype=torch.float32).view(3, 1, 1)
        tinted = torch.where(m[None], (0.55 * tinted.float() + 0.45 * blue).to(torch.uint8), tinted)
        tinted = overlay_outlines(tinted[None], gt_t)[0]
        scale = size / input_size
        pts = [((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5)
               for x, y in episode["points"][: k + 1]]
        pos = [lab == 1 for lab in episode["labels"][: k + 1]]
        tiles.append(draw_points(tinted.permute(1, 2, 0).contiguous().numpy(), pts, pos, radius=3))
        titles.append(f"{k}: {episode['dice'][k]:.3f}")
    return contact_sheet(tiles, cols=len(tiles), titles=titles)
