"""The README main job's PPO phase, this checkout against another one, side by side.

    git worktree add /tmp/base <commit>      # the code to compare against
    OMP_NUM_THREADS=2 python -m bench.main_job_speed --other /tmp/base

For each checkout, in fresh subprocesses taking turns (``--repeats`` times), it builds the main
job's trainer with the default config (only the run folder, logging and progress bars are
changed, and the mask prior is left untrained: pre-training is the same code in both and is
not an env step; a checkout whose command keeps freed host memory, ``gpu_env.host_allocator``,
does so here too), runs one warm-up PPO iteration, then times ``--iterations`` iterations of
``Trainer.iterate()`` (rollout + GAE + update). It also times the two halves of an iteration
in this checkout (``collect`` and ``ppo_update``). Prints env steps/s per checkout, the ratio,
and writes the figures as JSON with ``--out``. ``--autocast bf16`` runs this checkout as
``sam2click-train --autocast bf16`` would (the other checkout keeps its default, fp32).

The child code sets config fields by leaf name, so it runs against a flat config (older
commits) and a nested one alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Shared by both child programs: build the main job's trainer (argv: images, threads) and run
# one warm-up iteration. Settings are set by leaf name, so flat configs (older checkouts) and
# sectioned ones both work.
SETUP = r"""
import dataclasses, json, sys, tempfile, time
try:  # freed memory kept for the timed iterations, as the checkout's sam2click-train keeps it
    # for training (checkouts that have it); set before the build here, which changes the peak
    # memory of building the trainer, not the PPO iterations timed
    from gpu_env.host_allocator import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
import torch
from ppo.config import TrainConfig
import ppo.train as T

def set_leaf(cfg, name, value):
    names = {f.name for f in dataclasses.fields(cfg)}
    if name in names:
        return dataclasses.replace(cfg, **{name: value}), True
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sub):
            new, ok = set_leaf(sub, name, value)
            if ok:
                return dataclasses.replace(cfg, **{f.name: new}), True
    return cfg, False

images, threads, autocast = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
cfg = TrainConfig()
changes = dict(out_dir=tempfile.mkdtemp(), progress=False, tensorboard=False, eval_every=0,
               device="cpu", train_images=images)
if autocast != "none":  # only when asked: older checkouts may not have the setting
    changes["autocast"] = autocast
for k, v in changes.items():
    cfg, ok = set_leaf(cfg, k, v)
    assert ok, k
tr = T.Trainer(cfg)
tr.iterate()
"""

# Whole iterations (argv[4]: how many): any checkout.
CHILD = SETUP + r"""
iterations = int(sys.argv[4])
t0 = time.perf_counter()
for _ in range(iterations):
    out = tr.iterate()
float(out["loss_objective"].sum())
dt = time.perf_counter() - t0
B, Tn = tr.buffer.batch_size[1], tr.buffer.batch_size[0]
print(json.dumps({"steps_per_s": iterations * B * Tn / dt, "s_per_iteration": dt / iterations}))
"""

# The rollout and the update timed apart: this checkout (it calls today's collect).
PARTS = SETUP + r"""
from ppo.loss import ppo_update
from ppo.rollout import collect, shared_phase

res = {"collect_s": [], "update_s": []}
for _ in range(3):
    t0 = time.perf_counter()
    with tr.precision():
        tr.state, tr.initial_dice = collect(tr.env, tr.state, tr.ac, tr.buffer, tr.stats,
                                            tr.initial_dice, shared_phase(tr.env, tr.state))
    t1 = time.perf_counter()
    with tr.precision():
        out = ppo_update(tr.loss_module, tr.optimizer, tr.buffer, tr.ppo_cfg, generator=tr.generator)
    float(out["loss_objective"].sum())
    res["collect_s"].append(t1 - t0)
    res["update_s"].append(time.perf_counter() - t1)
n = tr.buffer.numel()
print(json.dumps({"collect_steps_per_s": n / min(res["collect_s"]),
                  "update_samples_per_s": n / min(res["update_s"]),
                  "collect_s": min(res["collect_s"]), "update_s": min(res["update_s"])}))
"""


def run(repo: Path, code: str, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=repo, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the run in {repo} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _commit(repo: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", type=Path, required=True, help="checkout of the code to compare against")
    p.add_argument("--iterations", type=int, default=4, help="timed PPO iterations per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per checkout, taking turns")
    p.add_argument("--train-images", type=int, default=1024, help="training images (default: the main job's)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the main job uses all cores)")
    p.add_argument("--autocast", choices=("none", "bf16"), default="none",
                   help="this checkout's --autocast (the other runs its default, fp32)")
    p.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    a = p.parse_args(argv)
    if a.out is not None and a.out.exists():
        raise SystemExit(f"--out {a.out} already exists; pass a new path (results are never "
                         f"overwritten)")
    rates: dict[str, list[float]] = {"this": [], "other": []}
    for r in range(a.repeats):
        for name, repo in (("other", a.other.resolve()), ("this", ROOT)):
            autocast = a.autocast if name == "this" else "none"
            res = run(repo, CHILD, [str(a.train_images), str(a.threads), autocast, str(a.iterations)])
            rates[name].append(res["steps_per_s"])
            print(f"run {r + 1}: {name:5s} {res['steps_per_s']:7.1f} env steps/s "
                  f"({res['s_per_iteration']:.2f} s per iteration)", flush=True)
    parts = run(ROOT, PARTS, [str(a.train_images), str(a.threads), a.autocast])
    this, other = statistics.median(rates["this"]), statistics.median(rates["other"])
    other_commit = _commit(a.other)
    # The command as anyone can rerun it: the other checkout by its commit, not this machine's path.
    mark = f"<checkout of {other_commit[:7]}>" if other_commit else str(a.other)
    words = [mark if w == str(a.other) else f"--other={mark}" if w.startswith("--other=") else w
             for w in (argv or sys.argv[1:])]
    summary = {"this_steps_per_s": this, "other_steps_per_s": other, "speedup": this / other,
               "runs": rates, "parts_this": parts, "other_commit": other_commit,
               "this_commit": _commit(ROOT), "threads": a.threads, "this_autocast": a.autocast,
               "iterations": a.iterations, "train_images": a.train_images,
               "command": "python -m bench.main_job_speed " + " ".join(words)}
    print(f"median: this {this:.1f}, other {other:.1f} env steps/s: {this / other:.2f}x")
    print(f"this checkout's parts: rollout {parts['collect_steps_per_s']:.0f} env steps/s, "
          f"update {parts['update_samples_per_s']:.0f} samples/s "
          f"({parts['collect_s']:.2f} s + {parts['update_s']:.2f} s per iteration)")
    if a.out:
        from sam_batch.atomic_io import atomic_write

        atomic_write(a.out, lambda f: json.dump(summary, f, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
