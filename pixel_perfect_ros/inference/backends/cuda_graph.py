"""``torch_cuda_graph``: the ``torch`` backend with the whole sampling loop replayed from a CUDA graph.

``encode`` runs eager, as in ``torch``. ``sample`` captures, per input shape and timestep sequence, the
complete Euler loop (every DiT call, every ``euler_step``, the final ``+ 0.5``) into one
``torch.cuda.CUDAGraph`` reading static input buffers (image, semantics, noise) and writing a static
output; a call copies its inputs into the buffers, replays the graph and returns a copy of the output.
The timestep tensors are made before the capture, so the loop makes no host-to-device copy and no host
sync. Graphs of the ``GRAPHS_KEPT`` most recently used keys are kept (each holds its own memory pool).

NOT RUN ON A GPU: written in a session without CUDA; only its unavailability on CPU (and the key / LRU
helper) is tested. Check it on a GPU against ``torch`` before relying on it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from ..sampling import DTYPES, sample_depth
from .base import BackendUnavailable
from .torch_backend import TorchBackend

GRAPHS_KEPT = 4
"""Captured graphs kept (least recently used dropped first): bounds the memory the graphs hold."""
WARMUP_RUNS = 2
"""Eager runs on a side stream before a capture (library handles, kernel selection, allocator)."""

Key = TypeVar("Key")
Value = TypeVar("Value")


class LruCache(Generic[Key, Value]):
    """At most ``capacity`` entries; ``get`` marks an entry as used, ``put`` drops the least recently used."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Key, Value] = OrderedDict()

    def get(self, key: Key) -> Value | None:
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: Key, value: Value) -> list[Key]:
        """Store ``value``; returns the keys dropped to stay within ``capacity``."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        dropped = []
        while len(self._entries) > self.capacity:
            dropped.append(self._entries.popitem(last=False)[0])
        return dropped

    def keys(self) -> list[Key]:
        """Least recently used first."""
        return list(self._entries)


def graph_key(noise: torch.Tensor, timesteps: list[int]) -> tuple:
    """What a captured loop is specific to: (N, H, W) of the (N, 1, H, W) noise and the timesteps."""
    n, _, height, width = noise.shape
    return (n, height, width, tuple(timesteps))


@dataclass
class CapturedLoop:
    """A captured sampling loop and the static tensors it reads and writes."""

    graph: torch.cuda.CUDAGraph
    image: torch.Tensor  # (N, 3, H, W) float32
    semantics: torch.Tensor  # (N, (H/16)*(W/16), 1024)
    noise: torch.Tensor  # (N, 1, H, W) float32
    output: torch.Tensor  # (N, 1, H, W) float32


class CudaGraphBackend(TorchBackend):
    """Eager encoder, CUDA-graph sampling loop (see the module docstring).

    Raises (from the constructor): BackendUnavailable without a CUDA device.
    """

    name = "torch_cuda_graph"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable(f"needs a CUDA device (device {self.device}, CUDA available to torch: "
                                     f"{torch.cuda.is_available()})")
        self._graphs: LruCache[tuple, CapturedLoop] = LruCache(GRAPHS_KEPT)

    def sample(self, image, semantics, noise, timesteps):
        with torch.inference_mode():  # the static buffers are inference tensors
            key = graph_key(noise, timesteps)
            loop = self._graphs.get(key)
            if loop is None:
                loop = self._capture(image, semantics, noise, list(timesteps))
                self._graphs.put(key, loop)  # a dropped graph frees its pool when collected
            loop.image.copy_(image)
            loop.semantics.copy_(semantics)
            loop.noise.copy_(noise)
            loop.graph.replay()
            return loop.output.clone()

    def _capture(self, image, semantics, noise, timesteps: list[int]) -> CapturedLoop:
        static_image, static_semantics, static_noise = image.clone(), semantics.clone(), noise.clone()
        t_tensors = [torch.tensor(t, dtype=torch.int32, device=self.device) for t in timesteps]  # before capture

        def run() -> torch.Tensor:
            # cache_enabled=False: autocast's weight-cast cache must not outlive a capture.
            with torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=self.dtype != "fp32",
                                cache_enabled=False):
                return sample_depth(self.dit, static_image, static_semantics, static_noise, timesteps,
                                    t_tensors).float()

        with torch.cuda.device(self.device):  # the capture stream is on the current device
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    run()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = run()
        return CapturedLoop(graph, static_image, static_semantics, static_noise, output)
