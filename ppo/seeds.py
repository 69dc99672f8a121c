"""Mean ± std over training seeds: aggregate several runs' ``results.json`` into one table.

Each training seed gives one evaluation (``gpu_env.evaluation.Curves.summary`` per policy:
per-click means over the held-out images). Across seeds, the spread that matters is that of
those per-seed means, so this module reports, per policy and click, the mean over seeds and the
sample standard deviation over seeds (``ddof=1``), plus every seed's own value. For the agent it
also reports the margin over a baseline row ("no further clicks" by default) per click: its
mean ± std over seeds and its worst seed, which is what "never below the baseline" is about.

Runs are only comparable on the same held-out images with the same number of evaluation
clicks (NoC depends on it); anything else raises a ``ValueError`` naming the runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gpu_env.evaluation import atomic_write, save_figure

__all__ = ["aggregate_seeds", "format_seed_tables", "load_results", "plot_seeds", "write_seeds"]

METRICS = ("dice", "dice_orig", "iou", "boundary")
NOCS = ("noc85", "noc90")


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` written by ``scripts.train``/``scripts.evaluate`` (or a run's
    ``eval`` folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"no results file at {p}: pass a results.json written by scripts.train or "
            f"scripts.evaluate, or the eval folder that holds it")
    with open(p) as f:
        data = json.load(f)
    if "results" not in data or not isinstance(data["results"], list):
        raise ValueError(f"{p} is not an evaluation results file (no 'results' list)")
    data.setdefault("meta", {})
    data["meta"].setdefault("path", str(p))
    return data


def _seed_of(run: dict, index: int) -> int | str:
    cfg = run["meta"].get("config") or {}
    return cfg.get("seed", f"run{index}")


def _check_comparable(runs: list[dict]) -> None:
    def describe(r):
        m = r["meta"]
        cfg = m.get("config") or {}
        return (cfg.get("dataset"), m.get("eval_split", cfg.get("eval_split")),
                r["results"][0]["num_images"], r["results"][0]["max_clicks"])

    ref = describe(runs[0])
    for r in runs[1:]:
        got = describe(r)
        if got != ref:
            raise ValueError(
                f"runs are not comparable: {runs[0]['meta'].get('path')} has (dataset, eval split, "
                f"images, evaluation clicks) = {ref} but {r['meta'].get('path')} has {got}; "
                f"re-evaluate with the same split, image count and --num-clicks "
                f"(python -m scripts.evaluate --checkpoint ... --num-clicks {ref[3]})")


def aggregate_seeds(runs: list[dict], baseline: str = "no further clicks") -> dict:
    """Aggregate per-seed results (``load_results`` dicts) into per-policy rows.

    Returns ``{"seeds": [...], "num_images", "max_clicks", "rows": [row, ...]}``; each row has
    ``name``, ``clicks`` and, for every metric in ``METRICS``, ``<m>_mean``/``<m>_std`` lists
    over clicks (mean and ddof=1 std over seeds) and ``<m>_seeds`` (``[seed][click]``); for
    ``noc85``/``noc90`` the same as scalars. Rows other than ``baseline`` also carry
    ``margin_mean``/``margin_std``/``margin_min`` (Dice minus the baseline's, per click)."""
    if len(runs) < 2:
        raise ValueError(f"need at least 2 runs to aggregate over seeds, got {len(runs)}")
    _check_comparable(runs)
    names = [s["name"] for s in runs[0]["results"]]
    by_run = [{s["name"]: s for s in r["results"]} for r in runs]
    for r, named in zip(runs, by_run):
        missing = [n for n in names if n not in named]
        if missing:
            raise ValueError(f"{r['meta'].get('path')} has no rows {missing}; every run needs the "
                             f"same policies (evaluate with baselines on)")
    clicks = min(s["clicks"] for named in by_run for s in named.values())
    ddof = 1
    rows = []
    for name in names:
        row: dict = {"name": name, "clicks": clicks}
        for m in METRICS:
            vals = np.array([named[name][f"{m}_mean"][: clicks + 1] for named in by_run], float)
            row[f"{m}_seeds"] = vals.tolist()
            row[f"{m}_mean"] = vals.mean(0).tolist()
            row[f"{m}_std"] = vals.std(0, ddof=ddof).tolist()
        for t in NOCS:
            vals = np.array([named[name][f"{t}_mean"] for named in by_run], float)
            row[f"{t}_seeds"] = vals.tolist()
            row[f"{t}_mean"] = float(vals.mean())
            row[f"{t}_std"] = float(vals.std(ddof=ddof))
        rows.append(row)
    if baseline in names:
        base = np.array(next(r for r in rows if r["name"] == baseline)["dice_seeds"])
        for row in rows:
            if row["name"] == baseline:
                continue
            margin = np.array(row["dice_seeds"]) - base
            row["margin_vs"] = baseline
            row["margin_seeds"] = margin.tolist()
            row["margin_mean"] = margin.mean(0).tolist()
            row["margin_std"] = margin.std(0, ddof=ddof).tolist()
            row["margin_min"] = margin.min(0).tolist()
    return {"seeds": [_seed_of(r, i) for i, r in enumerate(runs)],
            "num_images": runs[0]["results"][0]["num_images"],
            "max_clicks": runs[0]["results"][0]["max_clicks"],
            "sources": [r["meta"].get("path") for r in runs], "rows": rows}


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def format_seed_tables(agg: dict, key: str = "dice") -> str:
    """Markdown: Dice per click (mean ± std over seeds) and NoC per policy, then the margin over
    the baseline for each non-baseline row that has one."""
    k = agg["rows"][0]["clicks"]
    seeds = ", ".join(str(s) for s in agg["seeds"])
    head = ["policy"] + [f"{key}@{c}" for c in range(k + 1)] + ["NoC@85", "NoC@90"]
    lines = [f"**{key} after k clicks: mean ± std over {len(agg['seeds'])} training seeds "
             f"({seeds}; std with ddof=1); {agg['num_images']} held-out images, NoC over "
             f"{agg['max_clicks']} clicks**\n",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in agg["rows"]:
        cells = [r["name"]] + [_pm(r[f"{key}_mean"][c], r[f"{key}_std"][c]) for c in range(k + 1)]
        cells += [_pm(r[f"{t}_mean"], r[f"{t}_std"]) for t in NOCS]
        lines.append("| " + " | ".join(cells) + " |")
    margins = [r for r in agg["rows"] if "margin_mean" in r and r["name"].startswith("agent")]
    if margins and key == "dice":
        base = margins[0]["margin_vs"]
        lines += ["", f"**Dice margin over \"{base}\": mean ± std over seeds (worst seed)**\n",
                  "| policy | " + " | ".join(f"@{c}" for c in range(k + 1)) + " |",
                  "|" + "|".join(["---"] * (k + 2)) + "|"]
        for r in margins:
            cells = [r["name"]] + [f"{r['margin_mean'][c]:+.3f} ± {r['margin_std'][c]:.3f} "
                                   f"({r['margin_min'][c]:+.3f})" for c in range(k + 1)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_seeds(agg: dict, path: str | Path) -> None:
    """Dice vs clicks, mean over seeds with ±std error bars, one line per policy (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in agg["rows"]:
        m, sd = np.asarray(r["dice_mean"]), np.asarray(r["dice_std"])
        ax.errorbar(np.arange(len(m)), m, yerr=sd, marker="o", capsize=3, label=r["name"])
    low = min(min(r["dice_mean"]) for r in agg["rows"])
    ax.set_ylim(max(0.0, math.floor(low * 10) / 10 - 0.1), 1.0)
    ax.set_xlabel("click (0 = initial user click)")
    ax.set_ylabel("Dice (low-res)")
    ax.set_title(f"mean ± std over {len(agg['seeds'])} training seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_seeds(agg: dict, out_dir: str | Path) -> dict:
    """Write ``seeds.json``, ``seeds.md`` and ``seeds_dice_vs_clicks.png`` (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "seeds.json", "md": out / "seeds.md",
             "plot": out / "seeds_dice_vs_clicks.png"}
    md = format_seed_tables(agg) + "\n\n" + format_seed_tables(agg, "dice_orig") + "\n"
    atomic_write(paths["json"], lambda f: json.dump(agg, f, indent=2))
    atomic_write(paths["md"], lambda f: f.write(md))
    plot_seeds(agg, paths["plot"])
    return paths
