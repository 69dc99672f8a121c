"""The benchmark suite's options: ``--bench-*`` flags (each also read from a ``BENCH_*``
environment variable) resolved once per session into ``BenchOptions`` (see the table in
``bench/conftest.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

from gpu_env.host_allocator import keep_freed_memory


def add_options(parser: pytest.Parser) -> None:
    """The suite's command-line options (``bench/conftest.py``'s ``pytest_addoption``)."""
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
    g.addoption("--bench-system-allocator", action="store_true", default=False,
                help="leave glibc's allocator as it is, i.e. do not keep freed memory as the "
                     "commands do (gpu_env.host_allocator); env BENCH_SYSTEM_ALLOCATOR=1")


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
    keep_freed_memory: bool
    """The session keeps freed host memory, as the commands do (``gpu_env.host_allocator``)."""

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
                "decode_chunk": self.decode_chunk, "keep_freed_memory": self.keep_freed_memory,
                "torch_threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def _flag(config: pytest.Config, option: str, env: str) -> bool:
    return bool(config.getoption(option)) or os.environ.get(env, "0") not in ("", "0", "false")


def resolve_options(config: pytest.Config) -> BenchOptions:
    """The session's options from the command line, then the environment, then the defaults;
    an impossible combination is a ``pytest.UsageError`` saying what to pass instead."""
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
    # Process-wide, like the commands' entry points: a session measures what they get.
    kept = False if _flag(config, "--bench-system-allocator", "BENCH_SYSTEM_ALLOCATOR") else keep_freed_memory()
    return BenchOptions(device=device, images=images, bf16=_flag(config, "--bench-bf16", "BENCH_BF16"),
                        compile=_flag(config, "--bench-compile", "BENCH_COMPILE"), compile_mode=mode,
                        cuda_graphs=graphs, decode_chunk=chunk, keep_freed_memory=kept)


OPTIONS = pytest.StashKey[BenchOptions]()
"""Where ``pytest_configure`` keeps the session's ``BenchOptions`` (``config.stash[OPTIONS]``)."""
