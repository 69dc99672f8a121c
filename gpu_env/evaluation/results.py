"""One evaluation's results (``Curves.summary`` per policy): the Markdown table, and the files
``results.json``, ``results.csv`` and ``dice_vs_clicks.png``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from gpu_env.evaluation.figures import plot_curves
from sam_batch.atomic_io import atomic_write


def plus_minus(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std`` with ``digits`` decimals, as every evaluation table writes it."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(summaries: list[dict], key: str = "dice", title: str | None = None) -> str:
    """Markdown table: one row per policy, Dice mean ± std after each click, NoC, boundary."""
    k = min(s["clicks"] for s in summaries)
    head = ["policy"] + [f"{key}@{c}" for c in range(k + 1)] + ["NoC@85", "NoC@90", f"BF@{k}"]
    lines = []
    if title:
        lines.append(f"**{title}**\n")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * len(head)) + "|")
    for s in summaries:
        cells = [s["name"]]
        cells += [plus_minus(s[f"{key}_mean"][c], s[f"{key}_std"][c]) for c in range(k + 1)]
        cells += [f"{s['noc85_mean']:.2f}", f"{s['noc90_mean']:.2f}",
                  plus_minus(s["boundary_mean"][k], s["boundary_std"][k])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(summaries: list[dict], out_dir: str | Path, meta: dict | None = None) -> dict:
    """Write ``results.json``, ``results.csv`` and ``dice_vs_clicks.png`` into ``out_dir``
    (each atomically). Returns the paths."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "csv": out / "results.csv",
             "plot": out / "dice_vs_clicks.png"}
    atomic_write(paths["json"], lambda f: json.dump({"meta": meta or {}, "results": summaries},
                                                     f, indent=2))

    def write_csv(f):
        w = csv.writer(f)
        w.writerow(["policy", "metric", "click", "mean", "std"])
        for s in summaries:
            for key in ("dice", "dice_orig", "iou", "boundary"):
                for c, (m, sd) in enumerate(zip(s[f"{key}_mean"], s[f"{key}_std"])):
                    w.writerow([s["name"], key, c, f"{m:.6f}", f"{sd:.6f}"])
            for t in ("noc85", "noc90"):
                w.writerow([s["name"], t, "", f"{s[f'{t}_mean']:.6f}", f"{s[f'{t}_std']:.6f}"])

    atomic_write(paths["csv"], write_csv)
    plot_curves(summaries, paths["plot"])
    return paths
