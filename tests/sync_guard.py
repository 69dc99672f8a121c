"""Make every Python entry point of host-device synchronisation raise while a block runs
(the CPU proof of the no-sync rule). It cannot see syncs made inside C++ kernels; on CUDA it
also turns on ``torch.cuda.set_sync_debug_mode("error")``, the complete check."""

from __future__ import annotations

import contextlib
import threading

import torch


class HostSyncError(AssertionError):
    pass


_ALLOWED = threading.local()


def allow_host_reads(fn):
    """Run ``fn()`` with ``forbid_host_sync``'s checks lifted (for documented exemptions)."""
    _ALLOWED.on = True
    try:
        return fn()
    finally:
        _ALLOWED.on = False


_TENSOR_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__",
                   "__index__", "nonzero", "masked_select")
_TORCH_FUNCTIONS = ("nonzero", "masked_select")


@contextlib.contextmanager
def forbid_host_sync():
    """Make the Python entry points of host-device synchronisation raise.

    Covers ``.item() .tolist() .cpu() .numpy()``, conversions to Python scalars/bools
    (``if tensor``, ``int(t)``, ``float(t)``, ``t.__index__``) and boolean-mask
    indexing/``nonzero`` (data-dependent shapes). It cannot see syncs made inside C++
    kernels; on CUDA, ``torch.cuda.set_sync_debug_mode("error")`` is the complete check.
    """
    def guard(original, what):
        def guarded(*args, **kwargs):
            if not getattr(_ALLOWED, "on", False):
                raise HostSyncError(f"host sync: {what}")
            return original(*args, **kwargs)
        return guarded

    getitem = torch.Tensor.__getitem__

    def guarded_getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if not getattr(_ALLOWED, "on", False) and any(
            isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts
        ):
            raise HostSyncError("host sync: boolean-mask indexing")
        return getitem(self, index)

    saved = [(torch.Tensor, name, getattr(torch.Tensor, name)) for name in _TENSOR_METHODS]
    saved += [(torch, name, getattr(torch, name)) for name in _TORCH_FUNCTIONS]
    try:
        for owner, name, original in saved:
            prefix = "torch.Tensor." if owner is torch.Tensor else "torch."
            setattr(owner, name, guard(original, prefix + name))
        torch.Tensor.__getitem__ = guarded_getitem
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("error")
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode(0)
        torch.Tensor.__getitem__ = getitem
        for owner, name, original in saved:
            setattr(owner, name, original)
