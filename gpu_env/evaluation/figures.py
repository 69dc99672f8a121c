"""Evaluation figures: Dice vs clicks of one evaluation and over training seeds (atomic PNGs),
built outside pyplot so that no matplotlib backend is chosen here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sam_batch.atomic_io import atomic_write


def new_figure(**kw):
    """A matplotlib ``Figure`` outside pyplot: no backend is chosen and no global figure list
    is touched, so library code never changes the caller's matplotlib state."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def save_figure(fig, path: str | Path) -> None:
    """``fig.tight_layout()``, then save it as PNG atomically (temp file, rename)."""
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True, what="figure")


def _dice_axes(ax, low: float) -> None:
    """Labels, grid and legend of a Dice-vs-clicks plot whose lowest mean is ``low``."""
    ax.set_xlabel("click (0 = initial user click)")
    ax.set_ylabel("Dice (low-res)")
    ax.set_ylim(max(0.0, math.floor(low * 10) / 10 - 0.1), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(summaries: list[dict], path: str | Path) -> None:
    """Dice (mean ± std band) vs clicks, one line per policy; written atomically as PNG."""
    fig = new_figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    for s in summaries:
        m = np.asarray(s["dice_mean"])
        sd = np.asarray(s["dice_std"])
        x = np.arange(len(m))
        ax.plot(x, m, marker="o", label=s["name"])
        ax.fill_between(x, m - sd, m + sd, alpha=0.12)
    _dice_axes(ax, min(min(s["dice_mean"]) for s in summaries))
    save_figure(fig, path)


def plot_seeds(agg: dict, path: str | Path) -> None:
    """Dice vs clicks, mean over seeds with ±std error bars, one line per policy
    (``seeds.aggregate_seeds`` rows; atomic PNG)."""
    fig = new_figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    for r in agg["rows"]:
        m, sd = np.asarray(r["dice_mean"]), np.asarray(r["dice_std"])
        ax.errorbar(np.arange(len(m)), m, yerr=sd, marker="o", capsize=3, label=r["name"])
    ax.set_title(f"mean ± std over {len(agg['seeds'])} training seeds", fontsize=9)
    _dice_axes(ax, min(min(r["dice_mean"]) for r in agg["rows"]))
    save_figure(fig, path)
