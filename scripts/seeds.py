"""Train one run per seed, evaluate each, and report mean ± std over the seeds.

    sam2click-seeds --seeds 1 2 3                      # the main job, three seeds
    sam2click-seeds --seeds 1 2 3 --mode simulated_user --bc-steps 200
    sam2click-seeds --results runs/a/eval runs/b/eval  # aggregate existing evaluations

Every other flag is a sam2click-train flag (listed below). Seed s trains into
<out-dir>/<exp-name>_seed<s>; a seed whose evaluation already exists with the same settings is
not trained again, and one interrupted after a checkpoint resumes from its last.pt, so running
the command again after an interruption finishes the job. The summary (seeds.md, seeds.json,
seeds_dice_vs_clicks.png) goes to <out-dir>/<exp-name>_seeds unless --summary-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpu_env.evaluation.seeds import (RunSettings, aggregate_seeds, format_seed_tables,
                                      load_results, write_seeds)
from ppo.config import TrainConfig

from ._command import command_name, fail
from ._config_file import parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command_name("seeds"), description=__doc__, add_help=False,
                                allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="Training seeds, at least two, one run each.")
    p.add_argument("--results", nargs="+", metavar="PATH",
                   help="Aggregate these results.json files (or the eval folders holding them) "
                        "instead of training.")
    p.add_argument("--summary-dir", metavar="DIR",
                   help="Folder for seeds.md, seeds.json and seeds_dice_vs_clicks.png. Default: "
                        "<out-dir>/<exp-name>_seeds, or the folder above the first --results.")
    p.add_argument("-h", "--help", action="store_true", help="Show this help and exit.")
    return p


def run_settings(saved: dict) -> RunSettings:
    """The seed, dataset and held-out split of a saved training config, read through the one
    migration of saved configs (``TrainConfig.from_dict``), as training reads them."""
    cfg = TrainConfig.from_dict(saved)
    return RunSettings(cfg.run.seed, cfg.data.dataset, cfg.data.eval_split)


def _without_resume(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("run.resume", "run.overwrite")}


def _flat(cfg: TrainConfig) -> dict:
    """``{"section.setting": value}`` over every section."""
    return {f"{s}.{k}": v for s, values in cfg.to_dict().items() for k, v in values.items()}


def seed_config(cfg: TrainConfig, seed: int) -> TrainConfig:
    """The run of ``seed``: ``cfg`` with that seed, in its own ``<exp_name>_seed<seed>`` folder,
    resuming from that folder's ``last.pt`` if an earlier attempt of the same config left one.

    Raises ``SystemExit`` if the folder holds a run of another config: its checkpoints would be
    overwritten or resumed with the wrong settings."""
    run = cfg.replace(seed=seed, exp_name=f"{cfg.run.exp_name}_seed{seed}")
    folder = Path(run.run.out_dir) / run.run.exp_name
    saved = folder / "config.json"
    if saved.is_file():
        old = _without_resume(_flat(TrainConfig.from_dict(json.loads(saved.read_text()))))
        mine = _without_resume(_flat(run))
        if old != mine:
            diff = sorted(k for k in old.keys() | mine.keys() if old.get(k) != mine.get(k))
            raise fail(
                "seeds", f"{folder} holds a run with another config (differs in: {', '.join(diff)}); "
                f"pass another --exp-name or --out-dir, or move that folder away")
    last = folder / "last.pt"
    if run.run.resume is None and last.is_file():
        run = run.replace(resume=str(last))
    elif run.run.resume is None and saved.is_file():
        # An attempt of this very config that stopped before its first checkpoint: nothing
        # to continue, so start it over (its partial log would otherwise refuse the folder).
        run = run.replace(overwrite=True)
    return run


def _finished(run: TrainConfig) -> dict | None:
    """The run's evaluation (``load_results``) if it already holds results of exactly this
    config."""
    path = Path(run.run.out_dir) / run.run.exp_name / "eval" / "results.json"
    if not path.is_file():
        return None
    results = load_results(path)
    old = results["meta"].get("config")
    if not old:
        return None
    same = _without_resume(_flat(TrainConfig.from_dict(old))) == _without_resume(_flat(run))
    return results if same else None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.help:
        print(parser.format_help())
        print("Training flags (each run's, as sam2click-train takes them):\n", flush=True)
        parse("seeds", ["--help"], description=None)  # prints them and exits
        return 0
    if bool(args.seeds) == bool(args.results):
        raise fail("seeds", "give either --seeds S1 S2 ... (train and evaluate one run per seed) "
                   "or --results A B ... (aggregate existing evaluations)")
    if args.results:
        if rest:
            raise fail("seeds", f"--results takes no training flags, got {rest}")
        runs = [load_results(p) for p in args.results]
        summary_dir = Path(args.summary_dir or Path(args.results[0]).parent)
    else:
        if any(a == "--seed" or a.startswith("--seed=") for a in rest):
            raise fail("seeds", "use --seeds S1 S2 ... (not --seed)")
        if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
            raise fail("seeds", f"--seeds needs at least two distinct seeds, got {args.seeds}")
        from .train import train_and_evaluate  # keeps freed memory while each trains

        cfg = parse("seeds", rest, description=__doc__)
        if cfg is None:  # --print-config
            return 0
        runs = []
        for seed in args.seeds:
            run = seed_config(cfg, seed)
            results = _finished(run)
            if results is None:
                print(f"\n=== seed {seed}: training {Path(run.run.out_dir) / run.run.exp_name}"
                      + (f" (resuming {run.run.resume})" if run.run.resume else ""))
                results = load_results(train_and_evaluate(run))
            else:
                print(f"\n=== seed {seed}: reusing {results['meta']['path']}")
            runs.append(results)
        summary_dir = Path(args.summary_dir or Path(cfg.run.out_dir) / f"{cfg.run.exp_name}_seeds")
    agg = aggregate_seeds(runs, settings=run_settings)
    paths = write_seeds(agg, summary_dir)
    print()
    print(format_seed_tables(agg))
    print(f"\nsummary: {paths['md']}, {paths['json']}, {paths['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
