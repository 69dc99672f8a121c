"""Render pictures for human inspection: a dataset's frames with their masks, or an agent's
evaluation episodes click by click.

  sam2click-render dataset                  # writes ./contact_sheet.png
  sam2click-render dataset --source kvasir:/data/Kvasir-SEG --split val --count 24
  sam2click-render episodes --checkpoint runs/ppo_click/last.pt --out runs/episodes
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import numpy as np
import torch
from PIL import Image
import tyro

from gpu_env.datasets import load_dataset
from gpu_env.evaluation import new_figure, save_figure
from gpu_env.visualize import contact_sheet, overlay_outlines
from ppo.command_options import AgentConfig, DeviceConfig, SplitConfig
from sam_batch.atomic_io import atomic_write

from ._command import cli


@dataclass
class DatasetSheet:
    """A contact sheet of a dataset's working images with their masks outlined."""

    out: Path = Path("contact_sheet.png")
    """PNG file to write (relative to the working directory)."""
    source: str = "synthetic"
    """The dataset: synthetic, synthetic:<seed>, kvasir:<folder>, folder:<folder> or an
    image/mask folder."""
    split: SplitConfig = field(default_factory=lambda: SplitConfig("train"))
    """The training split by default: the sheet shows frames the agent trains on."""
    size: int = 256
    """Working size in pixels; tiles are drawn at this size."""
    count: int = 12
    """Number of frames shown."""
    start: int = 0
    """Index of the first frame shown."""
    seed: int = 0
    """Seed of the synthetic generator (synthetic source only)."""
    pairs: bool = True
    """Show each frame twice: as is, and with its mask outlined (else outlined only)."""
    cols: int = 6
    """Tiles per row."""
    overwrite: bool = False
    """Replace ``out`` if it exists; without it an existing file is refused."""


def _refuse(message: str) -> None:
    raise SystemExit(f"sam2click-render: error: {message}")


def render_dataset(cfg: DatasetSheet) -> Path:
    if cfg.out.exists() and not cfg.overwrite:
        _refuse(f"{cfg.out} already exists; pass --overwrite to replace it, or --out "
                "<another file>. Nothing was written.")
    if cfg.out.is_dir():
        _refuse(f"--out {cfg.out} is a folder; the contact sheet is one PNG file "
                "(e.g. --out contact_sheet.png).")
    kw = {"count": cfg.start + cfg.count, "seed": cfg.seed} if cfg.source == "synthetic" else {}
    ds = load_dataset(cfg.source, split=cfg.split.split, size=cfg.size, **kw)
    sel = slice(cfg.start, min(len(ds), cfg.start + cfg.count))
    images, masks, ids = ds.images[sel].cpu(), ds.masks[sel].cpu(), ds.ids[sel]
    outlined = overlay_outlines(images, masks)
    to_np = lambda t: np.ascontiguousarray(t.permute(1, 2, 0).numpy())  # noqa: E731
    tiles, titles = [], []
    for k, name in enumerate(ids):
        area = masks[k].float().mean().item()
        if cfg.pairs:
            tiles += [to_np(images[k]), to_np(outlined[k])]
            titles += [name, f"mask {area:.1%}"]
        else:
            tiles.append(to_np(outlined[k]))
            titles.append(f"{name} ({area:.1%})")
    sheet = contact_sheet(tiles, cfg.cols, titles)
    path = atomic_write(cfg.out, lambda f: Image.fromarray(sheet).save(f, format="PNG"),
                        binary=True, what="contact sheet")
    print(f"wrote {path} ({len(ids)} frames of {ds.name}/{ds.split})")
    return path


@dataclass
class EpisodeStrips:
    """PNG strips of evaluation episodes: image, ground-truth outline (green), mask (blue),
    numbered clicks (foreground green, background red) and the Dice after each click. The oracle
    clicker's episodes are drawn when no checkpoint is given."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    out: Path = Path("runs/episodes")
    """Folder for the PNGs (one per episode)."""
    episodes: int = 4
    """Number of held-out episodes rendered."""
    clicks: int = 6
    """Clicks per episode (the initial user click included)."""
    overwrite: bool = False
    """Replace the episode strips (``episode_*.png``) already in ``out``: the new ones are
    written, then the old ones left over are deleted, so the folder shows one run. Without it
    a folder holding strips is refused; other files in it are never touched."""
    device: DeviceConfig = field(default_factory=lambda: DeviceConfig("cpu"))
    """The CPU by default: a handful of episodes needs no GPU (--device auto uses one)."""


def _strip(image: np.ndarray, gt: np.ndarray, ep: dict, path: Path, title: str) -> Path:
    n = len(ep["masks"])
    fig = new_figure(figsize=(2.4 * n, 2.6), dpi=110)
    axes = fig.subplots(1, n)
    for k, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(image)
        mask = ep["masks"][k]
        # image, mask and GT share the mask grid: pixel (row, col) is at (x=col, y=row)
        ax.imshow(np.ma.masked_where(~mask, mask), cmap="winter", alpha=0.45)
        ax.contour(gt.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        for j, ((x, y), lab) in enumerate(zip(ep["points"][: k + 1], ep["labels"][: k + 1])):
            u, v = (x + 0.5) * ep["frame"] - 0.5, (y + 0.5) * ep["frame"] - 0.5
            ax.scatter([u], [v], s=60, c="lime" if lab == 1 else "red", edgecolors="white")
            ax.text(u + 4, v - 4, str(j), color="white", fontsize=7, weight="bold")
        ax.set_title(f"click {k}: Dice {ep['dice'][k]:.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    return path


def render_episodes(cfg: EpisodeStrips) -> list[Path]:
    import json

    from gpu_env.evaluation import ActionClicker, OracleClicker, evaluate_clicker
    from ppo.checkpoint import load_checkpoint
    from ppo.config import TrainConfig
    from ppo.evaluate import greedy_actor
    from ppo.factory import build_envs
    from ppo.policies import build_policy

    old_strips = sorted(cfg.out.glob("episode_*.png")) if cfg.out.is_dir() else []
    if cfg.out.exists() and not cfg.out.is_dir():
        _refuse(f"--out {cfg.out} is a file; the episode strips go into a folder.")
    if old_strips and not cfg.overwrite:
        shown = ", ".join(p.name for p in old_strips[:4]) + (
            f" and {len(old_strips) - 4} more" if len(old_strips) > 4 else "")
        _refuse(f"{cfg.out} already holds episode strips ({shown}); pass --overwrite to replace "
                "them, or --out <another folder>. Nothing was written.")
    device = cfg.device.resolve()
    if cfg.agent.checkpoint:
        ck = load_checkpoint(cfg.agent.checkpoint, map_location=device)
        tcfg = TrainConfig.from_dict(json.loads(ck["config"])).replace(eval_images=cfg.episodes)
        envs = build_envs(tcfg, device, train=False)
        policy = build_policy(tcfg.policy, tcfg.env, tcfg.run.seed, device)
        policy.load_state_dict(ck["model"])
        from ppo.prior import attach_prior

        attach_prior(policy, envs.eval_env)
        clicker = ActionClicker("agent (PPO)", greedy_actor(policy))
    else:
        # The oracle reads the ground truth, not the observation: no mask prior to install.
        tcfg = TrainConfig().replace(eval_images=cfg.episodes, obs_mask_prior=False)
        envs = build_envs(tcfg, device, train=False)
        clicker = OracleClicker()
    env, data = envs.eval_env, envs.eval_data
    ids = torch.arange(min(cfg.episodes, len(data)))
    curves = evaluate_clicker(env, data, clicker, ids, num_clicks=cfg.clicks, record=len(ids),
                              progress=False)
    paths = []
    for ep in curves.episodes:
        i = ep["image_id"]
        ep["frame"] = env.mask_size / env.input_size  # prompt frame -> mask pixels
        image = torch.nn.functional.interpolate(data.images[i][None].float(), size=env.mask_size,
                                                mode="area")[0].permute(1, 2, 0).byte().numpy()
        gt = env.gt[i].cpu().numpy()
        paths.append(_strip(image, gt, ep, cfg.out / f"episode_{data.ids[i]}.png",
                            f"{clicker.name} on {data.ids[i]}"))
    for p in set(old_strips) - set(paths):  # --overwrite: no strip of an earlier run is left
        p.unlink(missing_ok=True)
    print(f"wrote {len(paths)} episode strips to {cfg.out}")
    return paths


MODES = {"dataset": (DatasetSheet, render_dataset), "episodes": (EpisodeStrips, render_episodes)}
"""Subcommand name -> (its settings, what it does)."""


def main(argv: list[str] | None = None) -> int:
    modes = Union[tuple(Annotated[cls, tyro.conf.subcommand(name)]  # noqa: UP007
                        for name, (cls, _) in MODES.items())]
    cfg = cli("render", modes, argv, __doc__)
    run = next(run for cls, run in MODES.values() if isinstance(cfg, cls))
    with torch.no_grad():  # scoped: a caller's grad mode is left as it was
        run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
