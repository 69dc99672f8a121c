"""Fixtures, options and the end-of-run summary of the benchmark suite (``bench/``).

Run (CPU, a few minutes; see bench/README.md):

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench -p no:cacheprovider --benchmark-only

Options (each also read from an environment variable, handy for ``scripts/bench.py``):

=========================  ======================  ============================================
``--bench-device``         ``BENCH_DEVICE``        ``cpu`` (default) or ``cuda[:N]``
``--bench-images``         ``BENCH_IMAGES``        images encoded by SAM2 once per session
                                                   (default 2 on CPU, 8 on CUDA; B repeats them)
``--bench-bf16``           ``BENCH_BF16=1``        bf16 features + ``torch.autocast`` (opt-in)
``--bench-compile``        ``BENCH_COMPILE=1``     ``torch.compile(fullgraph=True)`` (opt-in)
``--bench-compile-mode``   ``BENCH_COMPILE_MODE``  ``default``, ``reduce-overhead`` (CUDA graphs
                                                   through Inductor) or ``max-autotune``
``--bench-cuda-graphs``    ``BENCH_CUDA_GRAPHS=1`` capture the env step as a CUDA graph (CUDA)
``--bench-decode-chunk``   ``BENCH_DECODE_CHUNK``  rows per SAM2 decode pass (default: the decoder's, 4 on CPU / 256 on CUDA)
=========================  ======================  ============================================

Every opt-in fast path is gated: before it is timed, a case compares it with eager fp32 on the
same inputs and fails if they disagree beyond the stated tolerance (see ``bench_env.py``).

Peak memory, recorded in every case's ``extra_info``: on CUDA ``torch.cuda.max_memory_allocated``
over the timed block (``peak_memory_kind="cuda_max_allocated"``); on the CPU, where
``tracemalloc`` does not see torch's allocations and ``psutil`` is not a dependency, the growth
of the process's peak resident set (``resource.getrusage().ru_maxrss``) over the block
(``"cpu_maxrss_delta"``: 0 when the block stayed under an earlier peak) plus the current
resident set from ``/proc/self/statm`` (``rss_mib``).
"""

from __future__ import annotations

import functools
import os
import resource
import time
from dataclasses import dataclass, field

import pytest
import torch

from gpu_env.config import PROTOTYPE_ENV, EnvConfig
from gpu_env.env import ClickEnv
from sam_batch.config import SegmenterConfig
from sam_batch.factory import build_sam2_model, build_segmenter

SEGMENTERS = ("weightfree", "sam2")
SAM2_CONFIG = "sam2.1_hiera_b+"
"""SAM2.1 b+ with random weights (seed 0): the checkpoint's architecture and cost."""
CPU_BATCHES = (1, 16, 64, 256)
GPU_BATCHES = (256, 1024, 4096, 16384)
SLOW_CPU_CASES = {("weightfree", 256), ("sam2", 64), ("sam2", 256)}
"""CPU env/decode cases kept out of the default run (``-m slow`` or ``-m ''`` adds them)."""
CPU_TRAIN_CASES = (("weightfree", 16), ("weightfree", 64), ("sam2", 16))
GPU_TRAIN_CASES = (("weightfree", 1024), ("weightfree", 4096), ("sam2", 1024), ("sam2", 4096))
SLOW_CPU_TRAIN = {("sam2", 16)}


# ---------------------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("bench", "click-env benchmarks (bench/)")
    g.addoption("--bench-device", default=None, help="cpu (default) or cuda[:N]; env BENCH_DEVICE")
    g.addoption("--bench-images", type=int, default=None,
                help="images encoded once per session (default 2 on CPU, 8 on CUDA); env BENCH_IMAGES")
    g.addoption("--bench-bf16", action="store_true", default=False,
                help="bf16 features and autocast (opt-in, parity-gated); env BENCH_BF16=1")
    g.addoption("--bench-compile", action="store_true", default=False,
                help="torch.compile(fullgraph=True) the env step, decode and policy; env BENCH_COMPILE=1")
    g.addoption("--bench-compile-mode", default=None,
                help="torch.compile mode: default, reduce-overhead, max-autotune; env BENCH_COMPILE_MODE")
    g.addoption("--bench-cuda-graphs", action="store_true", default=False,
                help="capture the env step as a CUDA graph; env BENCH_CUDA_GRAPHS=1")
    g.addoption("--bench-decode-chunk", type=int, default=None,
                help="rows per SAM2 decoder pass (BatchedSAM2Decoder.max_chunk; default: its device default, 4 on CPU, 256 on CUDA); "
                     "env BENCH_DECODE_CHUNK")


@dataclass(frozen=True)
class BenchOptions:
    """The resolved settings of one benchmark session."""

    device: torch.device
    images: int
    bf16: bool
    compile: bool
    compile_mode: str
    cuda_graphs: bool
    decode_chunk: int | None

    @property
    def precision(self) -> str:
        return "bf16-autocast" if self.bf16 else "fp32"

    @property
    def feature_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float16

    @property
    def fast(self) -> bool:
        return self.bf16 or self.compile or self.cuda_graphs

    @property
    def label(self) -> str:
        parts = ["bf16" if self.bf16 else "fp32"]
        if self.compile:
            parts.append(f"compile[{self.compile_mode}]")
        if self.cuda_graphs:
            parts.append("cuda-graphs")
        return "+".join(parts) if self.fast else "eager-fp32"

    def info(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "path": self.label,
                "compile": self.compile, "compile_mode": self.compile_mode,
                "cuda_graphs": self.cuda_graphs, "feature_dtype": str(self.feature_dtype),
                "decode_chunk": self.decode_chunk, "torch_threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def _flag(config: pytest.Config, option: str, env: str) -> bool:
    return bool(config.getoption(option)) or os.environ.get(env, "0") not in ("", "0", "false")


def _resolve_options(config: pytest.Config) -> BenchOptions:
    name = config.getoption("--bench-device") or os.environ.get("BENCH_DEVICE", "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise pytest.UsageError(f"--bench-device={name!r} is not a torch device ({err}); use cpu or cuda") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--bench-device={name!r} but CUDA is not available here; "
                                "run with --bench-device cpu")
    if device.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--bench-device={name!r}: only cpu and cuda are supported")
    images = config.getoption("--bench-images") or int(os.environ.get("BENCH_IMAGES", "0")) or (
        8 if device.type == "cuda" else 2)
    # None: the decoder's own device default (4 rows per pass on a CPU, where the ~4 MiB-per-row
    # activations then stay in cache; 256 on an accelerator).
    chunk = config.getoption("--bench-decode-chunk") or int(os.environ.get("BENCH_DECODE_CHUNK", "0")) or None
    mode = config.getoption("--bench-compile-mode") or os.environ.get("BENCH_COMPILE_MODE", "default")
    graphs = _flag(config, "--bench-cuda-graphs", "BENCH_CUDA_GRAPHS")
    if graphs and device.type != "cuda":
        raise pytest.UsageError("--bench-cuda-graphs needs --bench-device cuda (CUDA graphs are CUDA-only)")
    if graphs and mode in ("reduce-overhead", "max-autotune"):
        raise pytest.UsageError(f"--bench-cuda-graphs with --bench-compile-mode {mode}: Inductor's own "
                                "CUDA graphs cannot run inside a captured graph; pick one of the two")
    if mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        raise pytest.UsageError(f"--bench-compile-mode={mode!r}: expected default, reduce-overhead, "
                                "max-autotune or max-autotune-no-cudagraphs")
    if images < 1 or (chunk is not None and chunk < 1):
        raise pytest.UsageError(f"--bench-images={images} and --bench-decode-chunk={chunk} must be >= 1")
    return BenchOptions(device=device, images=images, bf16=_flag(config, "--bench-bf16", "BENCH_BF16"),
                        compile=_flag(config, "--bench-compile", "BENCH_COMPILE"), compile_mode=mode,
                        cuda_graphs=graphs, decode_chunk=chunk)


OPTIONS = pytest.StashKey[BenchOptions]()


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


def pytest_configure(config: pytest.Config) -> None:
    config.stash[OPTIONS] = _resolve_options(config)
    config.stash[RESULTS] = Results()


# ---------------------------------------------------------------------------------- collection
def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` (pytest's default pattern is ``test_*.py``), so that
    ``pytest bench`` runs the suite; a file named on the command line is collected by pytest
    itself."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


# ---------------------------------------------------------------------------------- parametrisation
def _slow(marks: bool) -> list:
    return [pytest.mark.slow] if marks else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Batch sizes depend on the device: ``env_case`` = (segmenter, B), ``bench_batch`` = B,
    ``train_case`` = (segmenter, num_envs), ``update_batch`` = num_envs, ``segmenter_name``,
    ``memory_segmenter``.
    The largest CPU cases are marked slow."""
    opts = metafunc.config.stash[OPTIONS]
    cpu = opts.device.type == "cpu"
    batches = CPU_BATCHES if cpu else GPU_BATCHES
    if "env_case" in metafunc.fixturenames:
        params = [pytest.param((s, b), id=f"{s}-B{b}", marks=_slow(cpu and (s, b) in SLOW_CPU_CASES))
                  for s in SEGMENTERS for b in batches]
        metafunc.parametrize("env_case", params)
    if "bench_batch" in metafunc.fixturenames:
        params = [pytest.param(b, id=f"B{b}", marks=_slow(cpu and b == max(batches))) for b in batches]
        metafunc.parametrize("bench_batch", params)
    if "train_case" in metafunc.fixturenames:
        cases = CPU_TRAIN_CASES if cpu else GPU_TRAIN_CASES
        params = [pytest.param((s, b), id=f"{s}-B{b}", marks=_slow(cpu and (s, b) in SLOW_CPU_TRAIN))
                  for s, b in cases]
        metafunc.parametrize("train_case", params)
    if "update_batch" in metafunc.fixturenames:
        sizes = sorted({b for s, b in (CPU_TRAIN_CASES if cpu else GPU_TRAIN_CASES) if s == "weightfree"})
        metafunc.parametrize("update_batch", sizes, ids=[f"B{b}" for b in sizes])
    if "memory_segmenter" in metafunc.fixturenames:  # SAM2 x 1,000 iterations is hours on a CPU
        metafunc.parametrize("memory_segmenter", ["weightfree"] if cpu else list(SEGMENTERS))
    if "segmenter_name" in metafunc.fixturenames:
        metafunc.parametrize("segmenter_name", SEGMENTERS)


def plan(device: torch.device, segmenter: str, batch: int) -> tuple[int, int, int]:
    """``(warmup_rounds, rounds, steps_per_round)`` for an env-step case: a few seconds each on
    a 2-core CPU, a steady state of 10 x 10 steps on a GPU (5 x 5 above B = 1024: ~1 s per
    SAM2 step at B = 16384). A b+ decode costs ~0.2 s per row on one CPU core, the weight-free
    step ~5-10 ms per row."""
    if device.type == "cuda":
        return (3, 10, 10) if batch <= 1024 else (2, 5, 5)
    if segmenter == "sam2":
        return (1, 3, 3) if batch == 1 else (1, 2 if batch <= 16 else 1, 1)
    return {1: (2, 5, 20), 16: (1, 5, 5), 64: (1, 3, 3)}.get(batch, (1, 2, 2))


# ---------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    """Wait for queued device work (timing the work, not its launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


class PeakMemory:
    """Context manager recording the peak memory of a block (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: dict = {}

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = _maxrss_mib()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.result = {"peak_memory_mib": peak / 2**20,
                           "peak_memory_above_start_mib": (peak - self._start) / 2**20,
                           "peak_memory_kind": "cuda_max_allocated"}
        else:
            self.result = {"peak_memory_mib": _maxrss_mib() - self._start,
                           "peak_memory_kind": "cpu_maxrss_delta", "rss_mib": rss_mib(),
                           "maxrss_mib": _maxrss_mib()}


def random_actions(num_actions: int, steps: int, batch: int, device: torch.device, seed: int = 0
                   ) -> torch.Tensor:
    """``[steps, batch]`` uniform actions drawn from a private generator (made before timing)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_actions, (steps, batch), generator=g).to(device)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def opts(pytestconfig: pytest.Config) -> BenchOptions:
    return pytestconfig.stash[OPTIONS]


@pytest.fixture(scope="session")
def recorder(pytestconfig: pytest.Config) -> Results:
    return pytestconfig.stash[RESULTS]


def load_bench_dataset(count: int, split: str = "train"):
    """``count`` synthetic polyp images at 256 (the project's embedded dataset)."""
    from gpu_env.datasets import load_dataset

    return load_dataset("synthetic", split=split, size=256, count=count)


def segmenter_config(name: str) -> SegmenterConfig:
    """The benchmarks' config of segmenter ``name`` (one of ``SEGMENTERS``), for
    ``sam_batch.factory``: SAM2 is ``SAM2_CONFIG`` with random weights of seed 0."""
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; expected one of {SEGMENTERS}")
    return SegmenterConfig(kind=name, sam2_config=SAM2_CONFIG, sam2_checkpoint=None, sam2_seed=0)


class BenchAssets:
    """Everything a session shares, each built on first use: the dataset, SAM2 b+ (random
    weights, same architecture and cost as the checkpoint) and its features from the real image
    encoder (encoded once), the segmenters, the batched envs and the baseline envs."""

    def __init__(self, opts: BenchOptions, results: Results) -> None:
        self.opts, self.results = opts, results
        self._segmenters: dict[tuple[str, bool], object] = {}
        self._envs: dict[tuple[str, bool, EnvConfig | None], ClickEnv] = {}

    @functools.cached_property
    def data(self):
        t0 = time.perf_counter()
        data = load_bench_dataset(self.opts.images)
        self.results.setup["dataset_s"] = time.perf_counter() - t0
        return data

    @functools.cached_property
    def sam2_model(self) -> torch.nn.Module:
        return build_sam2_model(segmenter_config("sam2"), self.opts.device)

    @functools.cached_property
    def sam2_features(self):
        from sam_batch.encoder import encode_images

        images = [self.data.load_original(i)[0] for i in range(len(self.data))]
        model = self.sam2_model
        t0 = time.perf_counter()
        feats = encode_images(model, images, batch_size=4, dtype=self.opts.feature_dtype)
        sync(self.opts.device)
        self.results.setup["encode_s_per_image"] = (time.perf_counter() - t0) / len(images)
        return feats

    def segmenter(self, name: str, compiled: bool = False):
        """The named segmenter over the benchmark images (``compiled``: torch.compile'd decode),
        built by ``sam_batch.factory.build_segmenter``; SAM2 over the session's model and its
        features (encoded once)."""
        key = (name, compiled)
        if key not in self._segmenters:
            cfg = segmenter_config(name)
            sam2 = cfg.kind == "sam2"
            seg = build_segmenter(cfg, self.data.images, self.opts.device,
                                  model=self.sam2_model if sam2 else None,
                                  features=self.sam2_features if sam2 else None,
                                  max_chunk=self.opts.decode_chunk, compile=compiled and sam2)
            if compiled and not sam2:  # the geodesic decode has no compile switch of its own
                seg.decode = torch.compile(seg.decode, fullgraph=True, dynamic=False,
                                           mode=self.opts.compile_mode)
            self._segmenters[key] = seg
        return self._segmenters[key]

    def env(self, name: str, config: EnvConfig = PROTOTYPE_ENV, compiled: bool = False) -> ClickEnv:
        """The batched env of a segmenter (``compiled``: over its torch.compile'd decode); other
        configs share the precomputed constants when ``ClickEnv.with_config`` allows."""
        base_key = (name, compiled, None)
        if base_key not in self._envs:
            self._envs[base_key] = ClickEnv(self.segmenter(name, compiled), self.data, config)
        key = (name, compiled, config)
        if key not in self._envs:
            try:
                self._envs[key] = self._envs[base_key].with_config(config)
            except ValueError:
                self._envs[key] = ClickEnv(self.segmenter(name, compiled), self.data, config)
        return self._envs[key]

    def baseline_env(self, name: str, config: EnvConfig = PROTOTYPE_ENV):
        """The prototype-style env over the same images (and, for SAM2, the same weights and
        features) as the batched env."""
        from references.prototype_baseline import (EpisodeData, PrototypeClickEnv, SAM2Predictor,
                                              WeightFreePredictor)

        if name == "sam2":
            predictor = SAM2Predictor(self.sam2_model, self.sam2_features)
        else:
            predictor = WeightFreePredictor(self.segmenter("weightfree"))
        data = EpisodeData.from_dataset(self.data, predictor.mask_size, config.obs_size)
        return PrototypeClickEnv(predictor, data, config, seed=0)


@pytest.fixture(scope="session")
def assets(opts: BenchOptions, recorder: Results) -> BenchAssets:
    return BenchAssets(opts, recorder)


class BaselineRates:
    """The prototype-style baseline's env steps/s per segmenter, measured once per session on
    the benchmark device (``bench_env.test_prototype_baseline`` stores its measurement here;
    a batched case that runs first triggers the same measurement itself)."""

    def __init__(self, assets: BenchAssets) -> None:
        self.assets = assets
        self.results = assets.results

    def episodes(self, name: str) -> tuple[int, int]:
        """``(warm-up, timed)`` episodes: seconds on a CPU, ~1 s of steady state on a GPU."""
        if self.assets.opts.device.type == "cuda":
            return 2, 20
        return (1, 2) if name == "sam2" else (2, 20)

    def store(self, name: str, entry: dict) -> None:
        self.results.baseline[name] = entry

    def rate(self, name: str) -> float:
        if name not in self.results.baseline:
            from references.prototype_baseline import run_episodes

            env = self.assets.baseline_env(name)
            warm, timed = self.episodes(name)
            run_episodes(env, warm, seed=1)
            with PeakMemory(self.assets.opts.device) as mem:
                t0 = time.perf_counter()
                steps = run_episodes(env, timed, seed=2)
                seconds = time.perf_counter() - t0
            self.store(name, {"segmenter": name, "steps_per_s": steps / seconds,
                              "ms_per_step": 1e3 * seconds / steps, **mem.result})
        return self.results.baseline[name]["steps_per_s"]


@pytest.fixture(scope="session")
def baseline(assets: BenchAssets) -> BaselineRates:
    return BaselineRates(assets)


# ---------------------------------------------------------------------------------- summary
def _table(tr, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    tr.write_line("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        tr.write_line("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    res, opts = config.stash.get(RESULTS, None), config.stash.get(OPTIONS, None)
    if res is None or not (res.env or res.baseline or res.components or res.train or res.memory):
        return
    tr = terminalreporter
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
