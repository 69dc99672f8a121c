"""Row chunks: run an env function on a fixed number of rows at a time.

Every env row is independent of the others, so a batched env function can process its batch
in chunks and concatenate the results without changing any row's values. On a CPU this keeps
the working set of one call in cache (see ``ClickEnv``'s ``row_chunk``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gpu_env.host_allocator import keeps_freed_memory

CPU_ROW_CHUNK = 32  # rows per pass of the env's functions on a CPU (see ClickEnv's row_chunk)


def rows_per_pass(explicit: int | None, device: torch.device) -> int | None:
    """``explicit`` if set; otherwise ``CPU_ROW_CHUNK`` on a CPU while the process returns freed
    memory to the OS (``gpu_env.host_allocator``), else None (the whole batch). Decided at each
    call, so a command that starts keeping freed memory after building its envs un-chunks them.
    Measured (weight-free, 1 thread, ms per row at B = 16/64/256): whole batch 1.52/1.40/2.88 and
    32-row chunks 1.36/1.54/1.86 with glibc's defaults; with freed memory kept, whole batch
    1.39/1.36/1.37 and chunks 1.34/1.47/1.47 (the chunks' concatenation is the difference)."""
    if explicit is not None or device.type != "cpu" or keeps_freed_memory():
        return explicit
    return CPU_ROW_CHUNK


def by_rows(fn):
    """Run ``fn(self, state, ...)`` on ``self.row_chunk`` rows at a time and concatenate the
    (TensorDict or tuple of TensorDict) results; every tensor argument with the state's batch
    size is sliced alongside. Chunk bounds are Python ints from shapes: no host sync, and each
    row gets the computation it gets in a full-batch call."""

    def run(self, state, *args, **kwargs):
        B, c = state.batch_size[0], self.row_chunk
        if c is None or B <= c:
            return fn(self, state, *args, **kwargs)

        def rows(a, i):
            return a[i:i + c] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == B else a

        parts = [fn(self, state[i:i + c], *(rows(a, i) for a in args),
                    **{k: rows(v, i) for k, v in kwargs.items()}) for i in range(0, B, c)]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat([p[j] for p in parts]) for j in range(len(parts[0])))
        return torch.cat(parts)

    run.__name__, run.__doc__, run.__wrapped__ = fn.__name__, fn.__doc__, fn
    return run
