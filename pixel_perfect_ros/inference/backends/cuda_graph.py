"""``torch_cuda_graph``: the ``torch`` backend with the whole sampling loop replayed from a CUDA graph.

``encode`` runs eager, as in ``torch``. ``sample`` captures, per input shape and timestep sequence, the
complete Euler loop (every DiT call, every ``euler_step``, the final ``+ 0.5``) into one
``torch.cuda.CUDAGraph`` reading static input buffers (image, semantics, noise) and writing a static
output; a call copies its inputs into the buffers, replays the graph and returns a copy of the output.
The timestep tensors are made before the capture, so the loop makes no host-to-device copy and no host
sync. Graphs of the ``GRAPHS_KEPT`` most recently used keys are kept (the least recently used one is
dropped before a new capture), all in one memory pool (see ``CudaGraphBackend.__init__``). A key whose
capture failed runs eager (``torch``) from then on, without another try, with one log line.

NOT RUN ON A GPU in the session that wrote it: its bookkeeping (keys, LRU, failed captures) is tested on
CPU; the parity tests against ``torch`` (test_cuda_graph_backend.py) run only where CUDA is available.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import torch

from ..interrupt import Interrupted
from ..sampling import DTYPES, device_timesteps, sample_depth
from .base import BackendUnavailable, error_summary
from .torch_backend import TorchBackend

GRAPHS_KEPT = 4
"""Captured graphs kept (least recently used dropped first): bounds the memory the graphs hold."""
WARMUP_RUNS = 2
"""Eager runs on a side stream before a capture (library handles, kernel selection, allocator)."""
_LOG = logging.getLogger(__name__)

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
        return self._drop_beyond(self.capacity)

    def make_room(self) -> list[Key]:
        """Drop least recently used entries until a new one fits without dropping; returns their keys."""
        return self._drop_beyond(self.capacity - 1)

    def keys(self) -> list[Key]:
        """Least recently used first."""
        return list(self._entries)

    def _drop_beyond(self, size: int) -> list[Key]:
        dropped = []
        while len(self._entries) > size:
            dropped.append(self._entries.popitem(last=False)[0])
        return dropped


def graph_key(noise: torch.Tensor, timesteps: list[int]) -> tuple:
    """What a captured loop is specific to: (N, H, W) of the (N, 1, H, W) noise and the timesteps."""
    n, _, height, width = noise.shape
    return (n, height, width, tuple(timesteps))


def describe_key(key: tuple) -> str:
    """A ``graph_key`` in words: "N,H,W 1x672x1184, 4 steps"."""
    n, height, width, timesteps = key
    return f"N,H,W {n}x{height}x{width}, {len(timesteps)} steps"


@dataclass
class CapturedLoop:
    """A captured sampling loop and the static tensors it reads and writes."""

    graph: torch.cuda.CUDAGraph
    image: torch.Tensor  # (N, 3, H, W) float32
    semantics: torch.Tensor  # (N, (H/16)*(W/16), 1024)
    noise: torch.Tensor  # (N, 1, H, W) float32
    output: torch.Tensor  # (N, 1, H, W) float32
    timesteps: tuple[torch.Tensor, ...]  # the 0-d int32 timestep tensors the graph reads (kept alive here)


class GraphCache(Generic[Value]):
    """Which ``graph_key`` runs from which captured graph: the ``capacity`` most recently used graphs, and
    the keys whose capture failed (run eager, never captured again).

    Args:
        capacity: graphs kept.
        log: receives one line per key whose capture failed.

    Attributes:
        graphs: key -> captured graph, least recently used first.
        failed: key -> why its capture failed.
    """

    def __init__(self, capacity: int, log: Callable[[str], None]):
        self.graphs: LruCache[tuple, Value] = LruCache(capacity)
        self.failed: dict[tuple, str] = {}
        self.log = log

    def get_or_capture(self, key: tuple, capture: Callable[[], Value]) -> Value | None:
        """The graph of ``key``: kept, else ``capture()`` now (after dropping the least recently used
        graph when full, so that at most ``capacity`` graphs exist, also during the capture); None when
        the capture of ``key`` fails, now or before (an ``Interrupted`` capture is not a failure: it
        propagates and the next call tries again)."""
        if key in self.failed:
            return None
        graph = self.graphs.get(key)
        if graph is not None:
            return graph
        self.graphs.make_room()  # a dropped graph's memory is freed now (no reference cycles)
        try:
            graph = capture()
        except Interrupted:
            raise
        except Exception as error:  # the partly captured graph is dropped with the capture's frame
            self.failed[key] = (f"CUDA graph capture failed for {describe_key(key)} ({error_summary(error)}); "
                                "that shape runs eager from now on")
            self.log(self.failed[key])
            return None
        self.graphs.put(key, graph)
        return graph


class CudaGraphBackend(TorchBackend):
    """Eager encoder, CUDA-graph sampling loop (see the module docstring).

    Args (beyond ``Backend``'s):
        log: receives one line per shape whose capture failed; default: this module's logger at WARNING.

    Raises (from the constructor): BackendUnavailable without a CUDA device.
    """

    name = "torch_cuda_graph"

    def __init__(self, dit, encoder, device, *args, log: Callable[[str], None] | None = None, **kwargs):
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():  # before the weights are cast
            raise BackendUnavailable(f"needs a CUDA device (device {device}, CUDA available to torch: "
                                     f"{torch.cuda.is_available()})")
        super().__init__(dit, encoder, device, *args, **kwargs)
        self._graphs: GraphCache[CapturedLoop] = GraphCache(GRAPHS_KEPT, log or _LOG.warning)
        # One memory pool for all graphs: a new capture reuses the memory of the others (and of dropped
        # ones) instead of holding a pool of its own. Graphs sharing a pool may overwrite each other's
        # internal and output memory when replayed; that is safe here because
        #   - every replay runs on one stream and calls never overlap (the pipeline runs one frame at a
        #     time), so two graphs never run at once;
        #   - each output is cloned right after its own replay (``sample``), before any other replay, and
        #     a graph writes its intermediates before reading them within a replay;
        #   - what a graph reads from outside (the static image / semantics / noise buffers, the timestep
        #     tensors, the weights) is allocated outside any capture, so not in the pool.
        with torch.cuda.device(self.device):
            self._pool = torch.cuda.graph_pool_handle()

    @property
    def degraded(self) -> str:
        """'' or, when captures failed, which shapes run eager and why (the latest failure)."""
        failed = self._graphs.failed
        if not failed:
            return ""
        return f"{len(failed)} shape(s) run without CUDA graphs; latest: {list(failed.values())[-1]}"

    def sample(self, image, semantics, noise, timesteps):
        with torch.inference_mode():  # the static buffers are inference tensors
            timesteps = list(timesteps)
            loop = self._graphs.get_or_capture(graph_key(noise, timesteps),
                                               lambda: self._capture(image, semantics, noise, timesteps))
            if loop is None:
                return super().sample(image, semantics, noise, timesteps)
            loop.image.copy_(image)
            loop.semantics.copy_(semantics)
            loop.noise.copy_(noise)
            loop.graph.replay()
            return loop.output.clone()

    def _capture(self, image, semantics, noise, timesteps: list[int]) -> CapturedLoop:
        """Warm up and capture the loop for these inputs' shapes (their values fill the static buffers)."""
        static_image, static_semantics, static_noise = image.clone(), semantics.clone(), noise.clone()
        t_tensors = device_timesteps(timesteps, self.device)  # made before the capture, outside its pool

        def run() -> torch.Tensor:
            # cache_enabled=False: autocast's weight-cast cache must not outlive a capture.
            with torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=self.dtype != "fp32",
                                cache_enabled=False):
                return sample_depth(self.sampling_dit, static_image, static_semantics, static_noise, timesteps,
                                    t_tensors).float()

        with torch.cuda.device(self.device):  # the capture stream is on the current device
            caller_stream = torch.cuda.current_stream()
            side = torch.cuda.Stream()
            side.wait_stream(caller_stream)
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    run()
            caller_stream.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                # Entering synchronizes the device: the last replay of a graph just dropped has finished.
                with torch.cuda.graph(graph, pool=self._pool):
                    output = run()
            finally:
                # torch.cuda.graph leaves its capture stream current when ending a failed capture raises.
                torch.cuda.set_stream(caller_stream)
        return CapturedLoop(graph, static_image, static_semantics, static_noise, output, t_tensors)
