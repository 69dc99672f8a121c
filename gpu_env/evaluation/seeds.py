"""Mean ± std over training seeds: aggregate several runs' ``results.json`` into one table.

Each training seed gives one evaluation (``Curves.summary`` per policy: per-click means over the
held-out images). Across seeds, the spread that matters is that of those per-seed means, so this
module reports, per policy and click, the mean over seeds and the sample standard deviation over
seeds (``ddof=1``), plus every seed's own value. For the agent it
also reports its difference to baseline rows ("no further clicks" and the oracle), computed per
seed: mean ± std over seeds and the worst seed, which is what "never below the baseline" and
"within 0.02 of the oracle" are about.

Runs are only comparable on the same held-out images with the same number of evaluation
clicks (NoC depends on it); anything else raises a ``ValueError`` naming the runs. The seed,
dataset and held-out split come from each run's saved training config through ``settings``
(default ``read_settings``; the seeds command passes ``ppo.config``'s migration).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from gpu_env.evaluation.figures import plot_seeds
from gpu_env.evaluation.results import plus_minus
from sam_batch.atomic_io import atomic_write

__all__ = ["RunSettings", "aggregate_seeds", "format_seed_tables", "load_results",
           "read_settings", "write_seeds"]

METRICS = ("dice", "dice_orig", "iou", "boundary")
NOCS = ("noc85", "noc90")
BASELINES = ("no further clicks", "oracle", "learned clicker")


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` written by ``scripts.train``/``scripts.evaluate`` (or a run's
    ``eval`` folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"no results file at {p}: pass a results.json written by sam2click-train or "
            f"sam2click-evaluate, or the eval folder that holds it")
    with open(p) as f:
        data = json.load(f)
    if "results" not in data or not isinstance(data["results"], list):
        raise ValueError(f"{p} is not an evaluation results file (no 'results' list)")
    data.setdefault("meta", {})
    data["meta"].setdefault("path", str(p))
    return data


class RunSettings(NamedTuple):
    """What aggregation reads of a run's saved training config."""

    seed: int | None
    dataset: str | None
    eval_split: str | None


def read_settings(saved: dict) -> RunSettings:
    """The settings of a saved training config as saved: nested (``{"run": {"seed": ..},
    "data": {"dataset": .., "eval_split": ..}}``) or flat (runs saved before the sections).
    A missing setting is None."""
    def section(name: str) -> dict:
        return saved[name] if isinstance(saved.get(name), dict) else saved

    return RunSettings(section("run").get("seed"), section("data").get("dataset"),
                       section("data").get("eval_split"))


Settings = Callable[[dict], RunSettings]
"""Saved config dict -> ``RunSettings`` (``read_settings``, or a caller's migration)."""


def _saved_settings(run: dict, settings: Settings) -> RunSettings | None:
    """The settings of the training config a results file records (None: it records none)."""
    saved = run["meta"].get("config")
    return settings(saved) if saved else None


def _seed_of(run: dict, index: int, settings: Settings) -> int | str:
    got = _saved_settings(run, settings)
    return f"run{index}" if got is None or got.seed is None else got.seed


def _check_comparable(runs: list[dict], settings: Settings) -> None:
    def describe(r):
        got = _saved_settings(r, settings) or RunSettings(None, None, None)
        return (got.dataset, r["meta"].get("eval_split", got.eval_split),
                r["results"][0]["num_images"], r["results"][0]["max_clicks"])

    ref = describe(runs[0])
    for r in runs[1:]:
        got = describe(r)
        if got != ref:
            raise ValueError(
                f"runs are not comparable: {runs[0]['meta'].get('path')} has (dataset, eval split, "
                f"images, evaluation clicks) = {ref} but {r['meta'].get('path')} has {got}; "
                f"re-evaluate with the same split, image count and --num-clicks "
                f"(sam2click-evaluate --checkpoint ... --num-clicks {ref[3]})")


def aggregate_seeds(runs: list[dict], baselines: tuple[str, ...] = BASELINES,
                    agent_prefix: str = "agent", settings: Settings = read_settings) -> dict:
    """Aggregate per-seed results (``load_results`` dicts) into per-policy rows.

    Returns ``{"seeds": [...], "num_images", "max_clicks", "sources", "rows": [row, ...],
    "differences": [...]}``. Each row has ``name``, ``clicks`` and, for every metric in
    ``METRICS``, ``<m>_mean``/``<m>_std`` lists over clicks (mean and ddof=1 std over seeds) and
    ``<m>_seeds`` (``[seed][click]``); for ``noc85``/``noc90`` the same as scalars.

    ``differences`` pairs every row whose name starts with ``agent_prefix`` with every row of
    ``baselines`` present, per seed (agent minus baseline): ``dice_*`` per click with the worst
    seed as ``dice_min``, and ``noc85_*``/``noc90_*`` with the worst seed as ``noc*_max``.

    ``settings`` reads a run's seed, dataset and held-out split from its saved config."""
    if len(runs) < 2:
        raise ValueError(f"need at least 2 runs to aggregate over seeds, got {len(runs)}")
    _check_comparable(runs, settings)
    names = [s["name"] for s in runs[0]["results"]]
    by_run = [{s["name"]: s for s in r["results"]} for r in runs]
    for r, named in zip(runs, by_run):
        missing = [n for n in names if n not in named]
        if missing:
            raise ValueError(f"{r['meta'].get('path')} has no rows {missing}; every run needs the "
                             f"same policies (evaluate with baselines on)")
    clicks = min(s["clicks"] for named in by_run for s in named.values())
    rows, per_seed = [], {}
    for name in names:
        row: dict = {"name": name, "clicks": clicks}
        per_seed[name] = {m: np.array([named[name][f"{m}_mean"][: clicks + 1] for named in by_run],
                                      float) for m in METRICS}
        per_seed[name].update({t: np.array([named[name][f"{t}_mean"] for named in by_run], float)
                               for t in NOCS})
        for m, vals in per_seed[name].items():
            row.update(_spread(m, vals))
        rows.append(row)
    differences = []
    for name in names:
        if not name.startswith(agent_prefix):
            continue
        for base in baselines:
            if base not in per_seed:
                continue
            diff = {"name": name, "baseline": base}
            for m in ("dice",) + NOCS:
                vals = per_seed[name][m] - per_seed[base][m]
                diff.update(_spread(m, vals))
                worst = vals.min(0) if m == "dice" else vals.max(0)  # NoC: more clicks is worse
                diff[f"{m}_{'min' if m == 'dice' else 'max'}"] = worst.tolist()
            differences.append(diff)
    return {"seeds": [_seed_of(r, i, settings) for i, r in enumerate(runs)],
            "num_images": runs[0]["results"][0]["num_images"],
            "max_clicks": runs[0]["results"][0]["max_clicks"],
            "sources": [r["meta"].get("path") for r in runs], "rows": rows,
            "differences": differences}


def _spread(key: str, vals: np.ndarray) -> dict:
    """``<key>_seeds``, ``<key>_mean`` and the sample std (ddof=1) ``<key>_std`` over axis 0."""
    return {f"{key}_seeds": vals.tolist(), f"{key}_mean": vals.mean(0).tolist(),
            f"{key}_std": vals.std(0, ddof=1).tolist()}


def format_seed_tables(agg: dict, key: str = "dice") -> str:
    """Markdown: ``key`` per click (mean ± std over seeds) and NoC per policy; for ``dice``
    also the agent-minus-baseline differences with their worst seed."""
    k = agg["rows"][0]["clicks"]
    seeds = ", ".join(str(s) for s in agg["seeds"])
    head = ["policy"] + [f"{key}@{c}" for c in range(k + 1)] + ["NoC@85", "NoC@90"]
    lines = [f"**{key} after k clicks: mean ± std over {len(agg['seeds'])} training seeds "
             f"({seeds}; std with ddof=1); {agg['num_images']} held-out images, NoC over "
             f"{agg['max_clicks']} clicks**\n",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in agg["rows"]:
        cells = [r["name"]] + [plus_minus(r[f"{key}_mean"][c], r[f"{key}_std"][c])
                               for c in range(k + 1)]
        cells += [plus_minus(r[f"{t}_mean"], r[f"{t}_std"], 2) for t in NOCS]
        lines.append("| " + " | ".join(cells) + " |")
    if key == "dice" and agg["differences"]:
        lines += ["", "**Agent minus baseline, per seed: mean ± std over seeds (worst seed); "
                      "Dice higher is better, NoC lower is better**\n",
                  "| agent − baseline | " + " | ".join(f"Dice@{c}" for c in range(k + 1))
                  + " | NoC@85 | NoC@90 |", "|" + "|".join(["---"] * (k + 4)) + "|"]
        for d in agg["differences"]:
            cells = [f"{d['name']} − {d['baseline']}"]
            cells += [f"{d['dice_mean'][c]:+.3f} ± {d['dice_std'][c]:.3f} ({d['dice_min'][c]:+.3f})"
                      for c in range(k + 1)]
            cells += [f"{d[f'{t}_mean']:+.2f} ± {d[f'{t}_std']:.2f} ({d[f'{t}_max']:+.2f})"
                      for t in NOCS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
