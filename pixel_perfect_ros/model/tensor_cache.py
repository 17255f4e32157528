"""A small bounded cache of tensors made from an input's shape (RoPE tables, resized position embeddings,
timestep tensors, seeded noise), and when caching is allowed at all.

Caching is off while a graph is being made (``torch.export`` and the dynamo ONNX exporter,
``torch.compile``, TorchScript tracing and the legacy ONNX exporter, CUDA-graph capture): a cached tensor
would be frozen into the graph as a constant of one size, and a captured CUDA graph would keep reading
memory the cache may free later. The value is then made afresh, exactly as without a cache.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import torch

Value = TypeVar("Value")


def caching_allowed(device: torch.device) -> bool:
    """False while exporting, compiling, tracing, or capturing a CUDA graph on ``device``'s stream."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return not (device.type == "cuda" and torch.cuda.is_current_stream_capturing())


class TensorCache(Generic[Value]):
    """At most ``capacity`` values by key, the least recently used dropped first; thread-safe.

    Values are made outside inference mode and autograd (``make`` runs under
    ``torch.inference_mode(False)`` and ``torch.no_grad()``): cached tensors are ordinary tensors without
    history, usable in inference mode and in training alike, and their version counter shows any
    in-place write. Callers must never modify a returned tensor in place.

    Copies and pickles start empty: a deep-copied module gets a cache of its own, and no cached tensor is
    saved with a pickled module.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])

    def get(self, key: Hashable, make: Callable[[], Value], device: torch.device) -> Value:
        """The value of ``key``: cached, or ``make()`` stored when ``caching_allowed(device)``; otherwise
        ``make()`` as called, nothing stored.

        Args:
            key: everything the value depends on besides constants of the owner (shape, device, dtype...).
            make: computes the value (called outside the lock: two threads may both make it once).
            device: where the value lives (CUDA-graph capture is checked on its stream).
        """
        if not caching_allowed(device):
            return make()
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        with torch.inference_mode(False), torch.no_grad():
            value = make()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return value
