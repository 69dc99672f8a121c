"""Benchmark the environment, SAM2 decode and PPO on this machine; write a JSON and a Markdown
report to ./bench-results/<date>_<device>.{json,md,log}.

    sam2click-bench                                  # CUDA if available, else CPU
    sam2click-bench --device cpu --select weightfree # the weight-free segmenter's cases only
    sam2click-bench --device cuda --bf16 --compile   # opt-in fast paths, checked against fp32
    sam2click-bench --device cpu --no-slow --threads 1

It runs the benchmark suites with pytest-benchmark in a subprocess (install the extra:
pip install 'sam2-click-rl[bench]'), counts the FLOPs and bytes of one env step and one decode,
and reports each case's steps per second beside the one-episode-at-a-time baseline, its
fraction of the device's peak, and the largest batch that fits the device's memory. The suites
ship with the package; from a clone the repository's bench/ folder runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppo.command_options import DeviceConfig, flat_settings

from ._command import cli, command_name, fail

PACKAGE = Path(__file__).resolve().parent
"""This command's folder: sam2click_cli/ when installed, scripts/ in a clone."""
MARKERS = ("slow: long-running cases", "gpu: needs a CUDA device")
"""The markers the suites use, registered by the ini file each run writes."""


def suite_root() -> Path:
    """The folder holding the suites (bench/) and the references they compare against
    (references/): inside the installed package, or the clone's root."""
    for root in (PACKAGE / "suite", PACKAGE.parent):
        if (root / "bench" / "conftest.py").is_file() and (root / "references").is_dir():
            return root
    raise fail("bench", f"no benchmark suites beside {PACKAGE} (neither suite/bench nor "
               f"../bench); reinstall the package (pip install 'sam2-click-rl[bench]') or run "
               f"it from a clone of the repository")


def check_pytest() -> None:
    """Say which packages the suites need when they are missing, before any work."""
    import importlib.util

    missing = [m for m in ("pytest", "pytest_benchmark", "scipy") if importlib.util.find_spec(m) is None]
    if missing:
        raise fail("bench", f"the benchmark suites need {', '.join(missing)}; install them with "
                   f"pip install 'sam2-click-rl[bench]' (or pip install pytest pytest-benchmark scipy)")


@dataclass
class BenchConfig:
    """Run the benchmark suites and write a JSON and a Markdown report."""

    device: DeviceConfig = field(default_factory=DeviceConfig)
    bf16: bool = False
    """Store features in bf16 and run under bf16 autocast; each case first checks its results
    against fp32 and fails if they disagree."""
    compile: bool = False
    """Compile the env step, the decode and the policy with torch.compile (checked against the
    uncompiled results first)."""
    compile_mode: str = "default"
    """torch.compile mode: default, reduce-overhead (CUDA graphs) or max-autotune."""
    cuda_graphs: bool = False
    """Capture the env step as one CUDA graph (CUDA only; checked against eager first)."""
    images: int | None = None
    """Images encoded by SAM2 once per run; batches repeat them. Unset: 2 on a CPU, 8 on CUDA."""
    decode_chunk: int | None = None
    """Rows per SAM2 decoder pass. Unset: 4 on a CPU, 256 on an accelerator."""
    slow: bool = True
    """Include the long cases (the 1,000-iteration memory run and the largest CPU batches)."""
    select: str | None = None
    """Run only the cases whose names match this pytest -k expression, e.g. "weightfree" or
    "env_step and not sam2"."""
    paths: tuple[str, ...] = ("bench",)
    """Suite files or folders to run, relative to the folder that holds the suites."""
    threads: int | None = None
    """CPU threads (OMP_NUM_THREADS) for the run; 1 gives steadier figures on a shared machine."""
    cache_images: tuple[int, ...] = (8, 1000, 10_000)
    """Feature-cache sizes, in images, of the largest-batch table."""
    memory_gib: float | None = None
    """Memory budget of the largest-batch table, in GiB. Unset: the GPU's memory, or the host's
    RAM."""
    peak_tflops: float | None = None
    """The device's bf16 dense peak in TFLOP/s. Unset: 312 for an A100, else 790 (H100/H200)."""
    bandwidth_tbs: float | None = None
    """The device's memory bandwidth in TB/s. Unset: 4.8 (H200)."""
    out_dir: Path = Path("bench-results")
    """Folder for the reports, relative to the working directory."""


# ---------------------------------------------------------------------------------- the run
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "cpu"
    return f"CPU {model}"


def write_ini(path: Path) -> Path:
    """The pytest settings of a benchmark run, the same from a clone and from an install (no
    project's pytest settings found above the suites apply)."""
    lines = ["[pytest]", "markers ="] + [f"    {m}" for m in MARKERS]
    lines += ["filterwarnings =", "    ignore::DeprecationWarning:hydra.*"]
    path.write_text("\n".join(lines) + "\n")
    return path


def pytest_command(cfg: BenchConfig, device: torch.device, json_path: Path,
                   ini_path: Path) -> tuple[list[str], dict]:
    """The pytest command line, run in the suites' folder, and the environment variables it
    needs."""
    cmd = [sys.executable, "-m", "pytest", *cfg.paths, "-c", str(ini_path), "--rootdir", ".",
           "-p", "no:cacheprovider", "--benchmark-only",
           f"--benchmark-json={json_path}", "--bench-device", str(device),
           "--bench-compile-mode", cfg.compile_mode]
    if cfg.decode_chunk:
        cmd += ["--bench-decode-chunk", str(cfg.decode_chunk)]
    if cfg.images:
        cmd += ["--bench-images", str(cfg.images)]
    for flag, on in (("--bench-bf16", cfg.bf16), ("--bench-compile", cfg.compile),
                     ("--bench-cuda-graphs", cfg.cuda_graphs)):
        if on:
            cmd.append(flag)
    markers = [] if cfg.slow else ["not slow"]
    if device.type != "cuda":
        markers.append("not gpu")
    cmd += ["-m", " and ".join(markers)]  # overrides pyproject's default "not slow and not gpu"
    if cfg.select:
        cmd += ["-k", cfg.select]
    env = {"SAM_BENCH_DEVICE": str(device)}  # bench_decode.py reads its own variables
    if cfg.bf16:
        env["SAM_BENCH_BF16"] = "1"
    if cfg.threads:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    return cmd, env


def run_pytest(cmd: list[str], env: dict, log_path: Path, root: Path) -> int:
    """Run the suites in ``root`` (so that they import as ``bench`` and ``references`` there
    only), echoing their output and keeping it in ``log_path``."""
    full_env = {**os.environ, **env}
    with open(log_path, "w") as log, subprocess.Popen(
        cmd, cwd=root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        return proc.wait()


# ---------------------------------------------------------------------------------- analysis
def analyse(raw: dict, cost: dict, peak: tuple[float, float], memory_bytes: float,
            cache_images: tuple[int, ...]) -> dict:
    """Per-case rows with physical-limit columns, and the largest-B table."""
    from bench.bench_memory import MemoryModel
    from bench.flops import roofline

    flop_s, byte_s = peak
    policy_f = cost["policy"]["forward_flops_per_row"]
    rows: dict[str, list] = {"baseline": [], "env": [], "components": [], "train": [],
                             "memory_steady": [], "memory_model": [], "other": []}
    for bench in raw.get("benchmarks", []):
        info = dict(bench.get("extra_info", {}))
        info["name"] = bench["name"]
        info["mean_s"] = bench["stats"]["mean"]
        kind = info.get("kind")
        step = cost["steps"].get(info.get("segmenter", ""), None)
        if kind in ("env_step", "baseline_env") and step:
            rate = info["steps_per_s"]
            info["achieved_tflop_s"] = rate * step["step_flops"] / 1e12
            info["fraction_of_bf16_peak"] = rate * step["step_flops"] / flop_s
            info["eager_bytes_per_step"] = step["step_bytes_eager"]
            info["achieved_tb_s_if_eager"] = rate * step["step_bytes_eager"] / 1e12
            limits = roofline(step["step_flops"], step["step_bytes_eager"], peak)
            info["eager_memory_bound_steps_per_s"] = limits["memory_bound_per_s"]
            info["compute_bound_steps_per_s"] = limits["compute_bound_per_s"]
        if kind == "train_iteration" and step:
            # rollout: policy+value forward, bootstrap forward; update: epochs x (fwd + 2x bwd)
            flops = step["step_flops"] + 2 * policy_f + info["update_epochs"] * 3 * policy_f
            info["flops_per_env_step"] = flops
            info["fraction_of_bf16_peak"] = info["steps_per_s"] * flops / flop_s
        if kind == "memory_model":
            fields = {f.name for f in dataclasses.fields(MemoryModel)}
            model = MemoryModel(**{k: info[k] for k in fields})
            info["max_batch"] = {str(n): model.max_batch(memory_bytes, n) for n in cache_images}
            info["memory_budget_bytes"] = memory_bytes
        key = {"baseline_env": "baseline", "env_step": "env", "component": "components",
               "train_update": "train", "train_iteration": "train", "memory_steady": "memory_steady",
               "memory_model": "memory_model"}.get(kind, "other")
        rows[key].append(info)
    return rows


# ---------------------------------------------------------------------------------- markdown
def _f(x, fmt: str = ".1f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and x == float("inf"):
        return "inf"
    return format(x, fmt)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    meta, rows, cost = report["meta"], report["rows"], report["cost"]
    out = [f"# Benchmark: {meta['device_name']} ({meta['date']})", "",
           f"- device `{meta['device']}`, torch {meta['torch']}, CUDA {meta['cuda']}, path "
           f"**{meta['path']}** (compute dtype {meta['precision']}, features {meta['feature_dtype']}), "
           f"threads {meta['torch_threads']} (OMP_NUM_THREADS={meta['omp_num_threads']})",
           f"- command: `{meta['command_line']}`", f"- pytest exit status {meta['pytest_exit']}",
           f"- peak assumed: {meta['peak_tflops']:.0f} TFLOP/s bf16 dense, {meta['bandwidth_tbs']:.2f} TB/s", ""]
    if rows["baseline"]:
        out += ["## Prototype-style baseline (one episode at a time, NumPy/SciPy on the host)", "",
                _md_table(["segmenter", "steps/s", "ms/step"],
                          [[r["segmenter"], _f(r["steps_per_s"], ".2f"), _f(r["ms_per_step"])]
                           for r in rows["baseline"]]), ""]
    if rows["env"]:
        out += ["## Env step throughput", "",
                "steps/s = B x steps / time; x baseline = batched / prototype-style, same process and "
                "device; % peak = achieved FLOP/s / bf16 peak; eager ceiling = memory bandwidth / "
                "bytes an eager step moves.", "",
                _md_table(["segmenter", "B", "steps/s", "ms/step", "x baseline", "peak MiB", "TFLOP/s",
                           "% bf16 peak", "eager mem ceiling steps/s"],
                          [[r["segmenter"], str(r["batch"]), _f(r["steps_per_s"]), _f(r["ms_per_step"], ".2f"),
                            _f(r.get("speedup_vs_baseline"), ".2f"), _f(r.get("peak_memory_mib")),
                            _f(r.get("achieved_tflop_s"), ".3f"), _f(100 * r.get("fraction_of_bf16_peak", 0), ".3f"),
                            _f(r.get("eager_memory_bound_steps_per_s"), ".0f")] for r in rows["env"]]), ""]
    if rows["components"]:
        out += ["## Where the time goes (one call for the whole batch)", "",
                _md_table(["component", "segmenter", "B", "ms/call", "us/row"],
                          [[r["component"], r.get("segmenter", "-"), str(r["batch"]), _f(r["ms_per_call"], ".2f"),
                            _f(1e3 * r["ms_per_call"] / r["batch"])] for r in rows["components"]]), ""]
    if rows["train"]:
        out += ["## PPO (ppo.train.Trainer)", "",
                "update: samples/s = T x B / update time (epochs x minibatches gradient steps); "
                "iteration: env steps/s of rollout + GAE + update; x baseline divides by the "
                "prototype-style env alone; the prototype trained at ~45 steps/s.", "",
                _md_table(["case", "segmenter", "B", "T", "steps/s", "ms/iter", "x baseline env",
                           "x prototype 45/s", "% bf16 peak"],
                          [[r["case"], r["segmenter"], str(r["num_envs"]), str(r["num_steps"]),
                            _f(r["steps_per_s"]), _f(r["ms_per_iteration"]), _f(r.get("speedup_vs_baseline"), ".2f"),
                            _f(r.get("speedup_vs_prototype_report"), ".2f"),
                            _f(100 * r["fraction_of_bf16_peak"], ".3f") if "fraction_of_bf16_peak" in r else "-"]
                           for r in rows["train"]]), ""]
    if rows["other"]:
        keys = ("ms_per_episode", "per_mask_ms", "batch", "impl", "peak_memory_mib", "peak_cuda_mib")
        out += ["## Other cases (bench_decode.py, bench_oracle.py, ...)", "",
                _md_table(["case", "mean ms", "details"],
                          [[r["name"], _f(1e3 * r["mean_s"], ".2f"),
                            ", ".join(f"{k}={_f(r[k], '.2f') if isinstance(r[k], float) else r[k]}"
                                      for k in keys if k in r)] for r in rows["other"]]), ""]
    out += ["## Physical limits (per row of one env step)", "",
            _md_table(["segmenter", "decode GFLOP", "step GFLOP", "decode MiB eager", "step MiB eager",
                       "step MiB minimal", "step transient MiB", "compute bound /s", "eager memory bound /s",
                       "minimal-bytes bound /s"],
                      [[name, _f(s["decode_flops"] / 1e9, ".3f"), _f(s["step_flops"] / 1e9, ".3f"),
                        _f(s["decode_bytes_eager"] / 2**20), _f(s["step_bytes_eager"] / 2**20),
                        _f(s["step_bytes_minimal"] / 2**20, ".2f"), _f(s["step_peak_live_bytes"] / 2**20),
                        _f(cost["roofline"][name]["step_eager"]["compute_bound_per_s"], ".0f"),
                        _f(cost["roofline"][name]["step_eager"]["memory_bound_per_s"], ".0f"),
                        _f(cost["roofline"][name]["step_minimal_bytes"]["memory_bound_per_s"], ".0f")]
                       for name, s in cost["steps"].items()]), ""]
    groups = cost["steps"].get("sam2", {}).get("decode_flops_by_group", {})
    if groups:
        out += ["SAM2 decode FLOPs by part: " + ", ".join(f"{k} {v / 1e9:.3f} G" for k, v in groups.items())
                + f"; policy forward {cost['policy']['forward_flops_per_row'] / 1e9:.3f} GFLOP per row.", ""]
    if rows["memory_model"]:
        sizes = list(rows["memory_model"][0]["max_batch"])
        out += ["## Memory: largest B that fits", "",
                f"Budget {rows['memory_model'][0]['memory_budget_bytes'] / 2**30:.1f} GiB x 0.9; bytes = fixed + "
                "per image x images + per row x B (per row = state + 2 observations + T rollout slots + "
                "transient).", "",
                _md_table(["segmenter", "T", "KiB/row", "MiB/image", "fixed MiB", "transient kind"]
                          + [f"max B @ {n} images" for n in sizes],
                          [[r["segmenter"], str(r["num_steps"]), _f(r["per_row"] / 2**10),
                            _f(r["per_image"] / 2**20, ".2f"), _f((r["fixed"] + r["transient_fixed"]) / 2**20),
                            r["transient_kind"]] + [str(r["max_batch"][n]) for n in sizes]
                           for r in rows["memory_model"]]), ""]
    for r in rows["memory_steady"]:
        out += [f"Steady state ({r['segmenter']}, B={r['num_envs']}, T={r['num_steps']}, {r['iterations']} "
                f"iterations): held {r['held_bytes_at_100'] / 2**20:.2f} MiB after 100, "
                f"{r['held_bytes_at_1000'] / 2**20:.2f} MiB after 1000 ({r['held_kind']}); growth "
                f"{r['growth_bytes'] / 2**10:.1f} KiB; RSS {r['rss_mib_at_100']:.0f} -> {r['rss_mib_at_1000']:.0f} MiB.", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- main
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:48] or "device"


def _output_paths(out_dir: Path, date: str, name: str) -> tuple[Path, Path, Path]:
    stem = f"{date}_{_slug(name)}"
    for n in range(1, 1000):
        candidate = stem if n == 1 else f"{stem}_{n}"
        if not (out_dir / f"{candidate}.json").exists():
            return (out_dir / f"{candidate}.json", out_dir / f"{candidate}.md", out_dir / f"{candidate}.log")
    raise fail("bench", f"too many reports named {stem} in {out_dir}; pass another --out-dir")


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (reports travel
    between machines: no absolute paths of the machine that ran them)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _portable(cmd: list[str], tmp: Path) -> list[str]:
    """The pytest command as a user would type it in the suites' folder: ``python``, not this
    interpreter's absolute path, and the temporary folder as a placeholder."""
    out = ["python" if c == sys.executable else c for c in cmd]
    return [c.replace(str(tmp), "<tmp>") for c in out]


def _suite_imports(root: Path) -> None:
    """Make the suites' own modules (bench.flops, bench.bench_memory) importable here too."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def main(argv: list[str] | None = None) -> int:
    cfg = cli("bench", BenchConfig, argv, __doc__)
    root = suite_root()
    check_pytest()
    _suite_imports(root)
    from bench.flops import cost_report, peaks_for

    device = cfg.device.resolve()
    name = device_name(device)
    peak = peaks_for(name) if device.type == "cuda" else peaks_for("H200")
    peak = (cfg.peak_tflops * 1e12 if cfg.peak_tflops else peak[0],
            cfg.bandwidth_tbs * 1e12 if cfg.bandwidth_tbs else peak[1])
    if cfg.memory_gib:
        budget = cfg.memory_gib * 2**30
    elif device.type == "cuda":
        budget = float(torch.cuda.get_device_properties(device).total_memory)
    else:
        budget = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now()
    json_path, md_path, log_path = _output_paths(cfg.out_dir, now.strftime("%Y-%m-%d"), name)

    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "pytest-benchmark.json"
        cmd, env = pytest_command(cfg, device, raw_path, write_ini(Path(tmp) / "pytest.ini"))
        status = run_pytest(cmd, env, log_path, root)
        raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    cost = cost_report(device)
    cost["roofline"] = cost.pop("roofline_h200")
    rows = analyse(raw, cost, peak, budget, cfg.cache_images)
    first = next((b.get("extra_info", {}) for b in raw.get("benchmarks", []) if "path" in b.get("extra_info", {})), {})
    shell = " ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(
        f"'{c}'" if (" " in c or c == "") else c for c in _portable(cmd, Path(tmp)))
    meta = {"date": now.isoformat(timespec="seconds"), "device": str(device), "device_name": name,
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "path": first.get("path", "eager-fp32"), "precision": first.get("precision", "fp32"),
            "feature_dtype": first.get("feature_dtype", "torch.float16"),
            "torch_threads": first.get("torch_threads", torch.get_num_threads()),
            "omp_num_threads": env.get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS")),
            "command": _portable(cmd, Path(tmp)), "command_env": env, "command_line": shell.strip(),
            "script_command": " ".join([command_name("bench"), *(argv if argv is not None else sys.argv[1:])]),
            "pytest_exit": status, "peak_tflops": peak[0] / 1e12, "bandwidth_tbs": peak[1] / 1e12,
            "config": {k: (_relative(v) if isinstance(v, Path) else v)
                       for k, v in flat_settings(cfg).items()},
            "log": _relative(log_path)}
    report = {"meta": meta, "rows": rows, "cost": cost,
              "pytest_benchmark": {k: raw.get(k) for k in ("machine_info", "commit_info", "version")}}
    json_path.write_text(json.dumps(report, indent=2, default=str))
    md_path.write_text(markdown(report))
    print(f"\nwrote {json_path}\n      {md_path}\n      {log_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
