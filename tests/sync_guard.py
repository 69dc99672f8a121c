"""A context manager that makes every host-device synchronisation point raise (CPU proof of
the no-sync rule; on a GPU, ``torch.cuda.set_sync_debug_mode("error")`` is the stronger check)."""

from __future__ import annotations

import contextlib

import torch

_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def forbid_host_sync():
    saved = {name: getattr(torch.Tensor, name) for name in _METHODS}

    def make(name):
        def raiser(self, *args, **kwargs):
            raise AssertionError(f"host synchronisation: Tensor.{name}() called in the hot path")
        return raiser

    try:
        for name in _METHODS:
            setattr(torch.Tensor, name, make(name))
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("error")
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode(0)
