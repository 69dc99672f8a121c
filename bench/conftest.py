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

``--bench-system-allocator`` (``BENCH_SYSTEM_ALLOCATOR=1``): leave glibc's allocator as it is. By
default a session keeps freed host memory as the commands do (``gpu_env.host_allocator``).

Every opt-in fast path is gated: before it is timed, a case compares it with eager fp32 on the
same inputs and fails if they disagree beyond the stated tolerance (see ``bench_env.py``).

This file holds pytest's hooks and the session fixtures; the rest lives in files named after
their concept: ``options.py`` (the flags above), ``cases.py`` (which cases run on a device),
``measure.py`` (timing and peak memory), ``assets.py`` (the dataset, segmenters and envs a
session shares) and ``summary.py`` (the end-of-run tables). Peak memory, recorded in every
case's ``extra_info``, is explained in ``measure.py``.
"""

from __future__ import annotations

import pytest

from bench.assets import (SAM2_CONFIG, SEGMENTERS, BaselineRates, BenchAssets, load_bench_dataset,
                          segmenter_config)
from bench.cases import parametrize, plan
from bench.measure import PeakMemory, random_actions, rss_mib, sync
from bench.options import OPTIONS, BenchOptions, add_options, resolve_options
from bench.summary import RESULTS, Results, write_summary

__all__ = [  # importable from here as before the split (bench files import their homes)
    "OPTIONS", "SAM2_CONFIG", "SEGMENTERS", "PeakMemory", "load_bench_dataset", "plan",
    "random_actions", "rss_mib", "segmenter_config", "sync",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[OPTIONS] = resolve_options(config)
    config.stash[RESULTS] = Results()


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` (pytest's default pattern is ``test_*.py``), so that
    ``pytest bench`` runs the suite; a file named on the command line is collected by pytest
    itself."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize(metafunc)


@pytest.fixture(scope="session")
def opts(pytestconfig: pytest.Config) -> BenchOptions:
    return pytestconfig.stash[OPTIONS]


@pytest.fixture(scope="session")
def recorder(pytestconfig: pytest.Config) -> Results:
    return pytestconfig.stash[RESULTS]


@pytest.fixture(scope="session")
def assets(opts: BenchOptions, recorder: Results) -> BenchAssets:
    return BenchAssets(opts, recorder)


@pytest.fixture(scope="session")
def baseline(assets: BenchAssets) -> BaselineRates:
    return BaselineRates(assets)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    write_summary(terminalreporter, config.stash.get(RESULTS, None), config.stash.get(OPTIONS, None))
