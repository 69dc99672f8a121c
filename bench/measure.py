"""Timing and memory helpers of the benchmark cases.

Peak memory, recorded in every case's ``extra_info``: on CUDA ``torch.cuda.max_memory_allocated``
over the timed block (``peak_memory_kind="cuda_max_allocated"``); on the CPU, where
``tracemalloc`` does not see torch's allocations and ``psutil`` is not a dependency, the growth
of the process's peak resident set (``resource.getrusage().ru_maxrss``) over the block
(``"cpu_maxrss_delta"``: 0 when the block stayed under an earlier peak) plus the current
resident set from ``/proc/self/statm`` (``rss_mib``).
"""

from __future__ import annotations

import os
import resource

import torch


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
