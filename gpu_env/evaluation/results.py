"""One evaluation's results (``Curves.summary`` per policy): the Markdown table, and the files
``results.json``, ``results.csv`` and ``dice_vs_clicks.png``."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

from gpu_env.evaluation.figures import plot_curves
from sam_batch.atomic_io import atomic_write


def plus_minus(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std`` with ``digits`` decimals, as every evaluation table writes it."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


NOCS = ("noc85", "noc90")


def noc_cell(summary: dict, tag: str) -> str:
    """NoC mean of one policy; ``≥ mean`` when some episodes never reached the IoU within the
    evaluation's clicks: they count as the number of clicks, so the mean is a lower bound."""
    mean = f"{summary[f'{tag}_mean']:.2f}"
    return f"≥ {mean}" if summary.get(f"{tag}_failures", 0) else mean


def capped_noc_note(summaries: list[dict]) -> str | None:
    """One line saying which NoC figures are lower bounds, and why (``None`` if none is);
    each capped figure also raises a ``UserWarning``."""
    capped = []
    for s in summaries:
        for tag in NOCS:
            failures = s.get(f"{tag}_failures", 0)
            if failures:
                capped.append(f"{s['name']} NoC@{tag[3:]}: {failures} of {s['num_images']}")
    if not capped:
        return None
    clicks = summaries[0].get("max_clicks", "the evaluation's")
    note = (f"≥: episodes that never reached the IoU within {clicks} clicks count as {clicks}, so "
            f"the mean is a lower bound ({'; '.join(capped)}); evaluate with more clicks "
            f"(--num-clicks, --eval-clicks) for the exact figure.")
    warnings.warn("NoC is capped by the number of clicks evaluated: " + note, stacklevel=3)
    return note


def format_table(summaries: list[dict], key: str = "dice", title: str | None = None) -> str:
    """Markdown table: one row per policy, Dice mean ± std after each click, NoC, boundary.
    A NoC that some episodes did not reach within the evaluation's clicks shows as ``≥ mean``,
    explained under the table."""
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
        cells += [noc_cell(s, "noc85"), noc_cell(s, "noc90"),
                  plus_minus(s["boundary_mean"][k], s["boundary_std"][k])]
        lines.append("| " + " | ".join(cells) + " |")
    note = capped_noc_note(summaries)
    if note:
        lines += ["", note]
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
