"""What the benchmark cases measured, gathered during the session and printed as tables at its
end (the JSON report has it all, as each case's ``extra_info``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from bench.options import BenchOptions


@dataclass
class Results:
    """What the cases measured, for the terminal summary (the JSON has it all as extra_info)."""

    env: list[dict] = field(default_factory=list)
    baseline: dict[str, dict] = field(default_factory=dict)
    components: list[dict] = field(default_factory=list)
    train: list[dict] = field(default_factory=list)
    memory: list[dict] = field(default_factory=list)
    setup: dict[str, float] = field(default_factory=dict)


RESULTS = pytest.StashKey[Results]()
"""Where ``pytest_configure`` keeps the session's ``Results`` (``config.stash[RESULTS]``)."""


def _table(tr, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    tr.write_line("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        tr.write_line("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def write_summary(tr, res: Results | None, opts: BenchOptions | None) -> None:
    """The end-of-run tables on the terminal reporter ``tr`` (nothing when no case recorded)."""
    if res is None or not (res.env or res.baseline or res.components or res.train or res.memory):
        return
    tr.section("click-env benchmark summary")
    tr.write_line(f"device={opts.device} path={opts.label} torch={torch.__version__} "
                  f"threads={torch.get_num_threads()} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
                  f"images={opts.images} " + " ".join(f"{k}={v:.2f}" for k, v in res.setup.items()))
    if res.baseline:
        tr.write_line("\nprototype-style baseline (one episode at a time, NumPy/SciPy on the host):")
        _table(tr, ["segmenter", "steps/s", "ms/step", "peak MiB"],
               [[b["segmenter"], _num(b["steps_per_s"], ".2f"), _num(b["ms_per_step"]),
                 _num(b.get("peak_memory_mib"))] for b in res.baseline.values()])
    if res.env:
        tr.write_line("\nenv step throughput (steps/s = B x steps / time; speedup = batched / baseline):")
        _table(tr, ["segmenter", "B", "steps/s", "ms/step", "baseline steps/s", "x baseline", "peak MiB"],
               [[e["segmenter"], str(e["batch"]), _num(e["steps_per_s"]), _num(e["ms_per_step"]),
                 _num(e.get("baseline_steps_per_s"), ".2f"), _num(e.get("speedup_vs_baseline"), ".2f"),
                 _num(e.get("peak_memory_mib"))] for e in res.env])
    if res.components:
        tr.write_line("\nwhere the time goes (ms per call for the whole batch):")
        _table(tr, ["component", "segmenter", "B", "ms/call", "us/row", "peak MiB"],
               [[c["component"], c.get("segmenter", "-"), str(c["batch"]), _num(c["ms_per_call"], ".2f"),
                 _num(1e3 * c["ms_per_call"] / c["batch"], ".1f"), _num(c.get("peak_memory_mib"))]
                for c in res.components])
    if res.train:
        tr.write_line("\nPPO (ppo.train.Trainer): update throughput and end-to-end training:")
        _table(tr, ["case", "segmenter", "B", "T", "steps/s", "ms/iter", "x baseline env", "peak MiB"],
               [[t["case"], t["segmenter"], str(t["num_envs"]), str(t["num_steps"]), _num(t["steps_per_s"]),
                 _num(t["ms_per_iteration"]), _num(t.get("speedup_vs_baseline"), ".2f"),
                 _num(t.get("peak_memory_mib"))] for t in res.train])
    for m in res.memory:
        tr.write_line("\nmemory: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in m.items()))
