"""The torch_cuda_graph backend: unavailable without CUDA (create_backend falls back to torch with the
reason), its graph key, LRU and graph bookkeeping (failed captures run eager and are not retried, the least
recently used graph is dropped before a capture; on CPU with a stand-in capture), the precomputed-timestep
loop it captures, and (CUDA only) parity with eager torch on a tiny random DiT."""
import pytest
import torch
from checkpoint_files import TINY_DIT
from torch import nn

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.backends import BackendUnavailable, create_backend
from pixel_perfect_ros.inference.backends.base import default_backend
from pixel_perfect_ros.inference.backends.cuda_graph import (
    GRAPHS_KEPT,
    CapturedLoop,
    CudaGraphBackend,
    GraphCache,
    LruCache,
    describe_key,
    graph_key,
)
from pixel_perfect_ros.inference.backends.torch_backend import TorchBackend
from pixel_perfect_ros.inference.interrupt import Interrupted
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.inference.sampling import sample_depth
from pixel_perfect_ros.model.dit import SEMANTICS_DIM, DiT
from pixel_perfect_ros.model.flow import sampling_timesteps
from pixel_perfect_ros.model.random_weights import randomize_

TIMESTEPS = sampling_timesteps(4)
SHAPES = ((32, 48), (48, 32), (32, 32), (48, 48), (64, 32))
"""GRAPHS_KEPT + 1 processing sizes (H, W): the last one evicts the first graph."""
assert len(SHAPES) == GRAPHS_KEPT + 1


@pytest.fixture(scope="module")
def model():
    return PixelPerfectDepth.from_checkpoints(bundled.CHECKPOINT, bundled.SEMANTICS, bundled.SEMANTICS_TYPE)


def test_auto_picks_cuda_graphs_on_cuda_and_torch_on_cpu():
    assert default_backend(torch.device("cuda")) == default_backend(torch.device("cuda:1")) == "torch_cuda_graph"
    assert default_backend(torch.device("cpu")) == "torch"


def test_on_cpu_it_is_unavailable_and_create_backend_runs_torch_saying_why(model):
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        CudaGraphBackend(model.dit, model.semantics_encoder, torch.device("cpu"), "fp32")
    backend, reason = create_backend("torch_cuda_graph", model.dit, model.semantics_encoder, torch.device("cpu"),
                                     "fp32")
    assert backend.name == "torch"
    assert reason.startswith("backend torch_cuda_graph unavailable (needs a CUDA device") and "running torch" in reason


def test_the_pipeline_reports_the_fallback(model):
    pipeline = PixelPerfectDepth(model.dit, model.semantics_encoder, backend="torch_cuda_graph")
    assert pipeline.backend.name == "torch" and "needs a CUDA device" in pipeline.backend_fallback


def test_graph_key_is_batch_size_and_timesteps():
    noise = torch.zeros(2, 1, 32, 48)
    assert graph_key(noise, [1000, 500]) == (2, 32, 48, (1000, 500))
    assert graph_key(noise, sampling_timesteps(4)) != graph_key(noise, sampling_timesteps(3))


def test_lru_drops_the_least_recently_used():
    cache = LruCache(2)
    assert cache.put("a", 1) == [] and cache.put("b", 2) == []
    assert cache.get("a") == 1  # a is now the most recent
    assert cache.put("c", 3) == ["b"]
    assert cache.get("b") is None and cache.keys() == ["a", "c"]
    assert cache.put("a", 4) == [] and cache.get("a") == 4 and cache.keys() == ["c", "a"]
    with pytest.raises(ValueError, match="capacity"):
        LruCache(0)


def test_the_loop_with_precomputed_timestep_tensors_is_the_official_one(model):
    image, noise = torch.rand(1, 3, 32, 48), torch.randn(1, 1, 32, 48)
    timesteps = sampling_timesteps(3)
    with torch.inference_mode():
        semantics = model.semantics_encoder.forward_semantics(image)
        expected = sample_depth(model.dit, image, semantics, noise, timesteps)
        tensors = [torch.tensor(t, dtype=torch.int32) for t in timesteps]
        assert torch.equal(sample_depth(model.dit, image, semantics, noise, timesteps, tensors), expected)
        with pytest.raises(ValueError):
            sample_depth(model.dit, image, semantics, noise, timesteps, tensors[:-1])


def test_lru_make_room_leaves_space_for_one_more():
    cache = LruCache(2)
    assert cache.make_room() == []
    cache.put("a", 1), cache.put("b", 2), cache.get("a")
    assert cache.make_room() == ["b"] and cache.keys() == ["a"]
    assert cache.make_room() == [] and cache.put("c", 3) == [] and cache.keys() == ["a", "c"]


def test_describe_key():
    assert describe_key(graph_key(torch.zeros(1, 1, 672, 1184), TIMESTEPS)) == "N,H,W 1x672x1184, 4 steps"


# ---- graph bookkeeping (CPU) --------------------------------------------------------------------

class Captures:
    """A stand-in ``capture``: returns ``"graph <key>"``, raises ``failures[key]``, records each attempt with
    the keys kept at that moment."""

    def __init__(self, cache: GraphCache, failures: dict | None = None):
        self.cache, self.failures, self.attempts = cache, failures or {}, []

    def __call__(self, key):
        def capture():
            self.attempts.append((key, self.cache.graphs.keys()))
            if key in self.failures:
                raise self.failures[key]
            return f"graph {key}"
        return capture


def test_the_least_recently_used_graph_is_dropped_before_a_capture():
    cache = GraphCache(2, log=pytest.fail)
    captures = Captures(cache)
    for key in ("a", "b", "a", "c"):
        assert cache.get_or_capture(key, captures(key)) == f"graph {key}"
    assert captures.attempts == [("a", []), ("b", ["a"]), ("c", ["a"])]  # b dropped before c was captured
    assert cache.graphs.keys() == ["a", "c"]


def test_a_failed_capture_is_remembered_per_key_and_not_retried():
    logs = []
    cache = GraphCache(2, log=logs.append)
    key = (1, 32, 48, (1000, 500))
    captures = Captures(cache, {key: RuntimeError("operation not permitted when stream is capturing")})
    assert cache.get_or_capture(key, captures(key)) is None
    assert cache.get_or_capture(key, captures(key)) is None
    assert cache.get_or_capture("b", captures("b")) == "graph b"
    assert [attempt for attempt, _ in captures.attempts] == [key, "b"]
    reason = ("CUDA graph capture failed for N,H,W 1x32x48, 2 steps (RuntimeError: operation not permitted "
              "when stream is capturing); that shape runs eager from now on")
    assert cache.failed == {key: reason} and logs == [reason] and cache.graphs.keys() == ["b"]


def test_an_interrupted_capture_propagates_and_is_tried_again():
    cache = GraphCache(2, log=pytest.fail)
    captures = Captures(cache, {"a": Interrupted("inference stopped on request")})
    with pytest.raises(Interrupted):
        cache.get_or_capture("a", captures("a"))
    captures.failures.clear()
    assert cache.get_or_capture("a", captures("a")) == "graph a" and cache.failed == {}


@pytest.fixture(scope="module")
def tiny_dit():
    """A random DiT of ``TINY_DIT`` size, eval mode, CPU."""
    return randomize_(DiT(**TINY_DIT), seed=7).eval().requires_grad_(False)


def inputs(height: int, width: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (1, 3, H, W), semantics (1, (H/16)*(W/16), 1024), noise (1, 1, H, W)), seeded, on ``device``."""
    generator = torch.Generator().manual_seed(height * 1000 + width)
    image, noise = torch.rand(1, 3, height, width, generator=generator), torch.randn(1, 1, height, width,
                                                                                      generator=generator)
    semantics = torch.randn(1, (height // 16) * (width // 16), SEMANTICS_DIM, generator=generator)
    return image.to(device), semantics.to(device), noise.to(device)


class EagerGraph:
    """A stand-in ``torch.cuda.CUDAGraph``: ``replay`` runs the loop eagerly from the static buffers."""

    def __init__(self, dit, loop_buffers):
        self.dit, self.buffers = dit, loop_buffers

    def replay(self):
        image, semantics, noise, output = self.buffers
        output.copy_(sample_depth(self.dit, image, semantics, noise, TIMESTEPS))


def cpu_graph_backend(dit, failing_shapes=()) -> tuple[CudaGraphBackend, list[str], list[tuple]]:
    """A CudaGraphBackend on the CPU (its CUDA check and pool skipped) whose ``_capture`` makes an
    ``EagerGraph`` (raises for ``failing_shapes``); returns it, its log and its capture attempts (H, W)."""
    backend = object.__new__(CudaGraphBackend)
    TorchBackend.__init__(backend, dit, nn.Identity(), torch.device("cpu"), "fp32")
    logs, attempts = [], []
    backend._graphs = GraphCache(GRAPHS_KEPT, logs.append)

    def capture(image, semantics, noise, timesteps):
        attempts.append(tuple(image.shape[-2:]))
        if tuple(image.shape[-2:]) in failing_shapes:
            raise RuntimeError("capture failed (test)")
        buffers = image.clone(), semantics.clone(), noise.clone(), torch.empty_like(noise)
        return CapturedLoop(EagerGraph(dit, buffers), *buffers, timesteps=())

    backend._capture = capture
    return backend, logs, attempts


@torch.inference_mode()
def test_the_backend_replays_kept_graphs_and_runs_failed_shapes_eager(tiny_dit):
    failing = (16, 32)
    backend, logs, attempts = cpu_graph_backend(tiny_dit, failing_shapes={failing})
    for shape in (*SHAPES, failing, failing, SHAPES[0]):
        image, semantics, noise = inputs(*shape)
        depth = backend.sample(image, semantics, noise, TIMESTEPS)
        assert torch.equal(depth, sample_depth(tiny_dit, image, semantics, noise, TIMESTEPS))
    # the failing shape was tried once and ran eager twice; the first shape, dropped for the fifth, was
    # captured again
    assert attempts == [*SHAPES, failing, SHAPES[0]]
    assert len(logs) == 1 and "N,H,W 1x16x32, 4 steps (RuntimeError: capture failed (test))" in logs[0]
    assert backend.degraded == f"1 shape(s) run without CUDA graphs; latest: {logs[0]}"
    assert len(backend._graphs.graphs.keys()) == GRAPHS_KEPT


# ---- on a GPU -----------------------------------------------------------------------------------

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
TOLERANCES = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 1e-1}
"""Largest |graph - eager| of normalised log-depth (the tiny DiT's is up to ~5). A replay runs the kernels
the eager loop runs, so 0 is expected; the bounds allow another cuBLAS algorithm on the capture stream
(a few units in the last place: bf16 has 8 bits of mantissa, fp16 11)."""


@pytest.fixture
def cuda_dit(tiny_dit):
    yield tiny_dit.cuda()
    tiny_dit.cpu()


def assert_matches_eager(graphs: CudaGraphBackend, eager: TorchBackend, shape: tuple[int, int]) -> None:
    image, semantics, noise = inputs(*shape, device="cuda")
    torch.testing.assert_close(graphs.sample(image, semantics, noise, TIMESTEPS),
                               eager.sample(image, semantics, noise, TIMESTEPS),
                               atol=TOLERANCES[graphs.dtype], rtol=0)


@cuda_only
@pytest.mark.parametrize("dtype", sorted(TOLERANCES))
def test_graph_replay_matches_eager_torch_on_cuda(cuda_dit, dtype):
    device = torch.device("cuda")
    graphs = CudaGraphBackend(cuda_dit, nn.Identity(), device, dtype, log=pytest.fail)
    eager = TorchBackend(cuda_dit, nn.Identity(), device, dtype)
    with torch.inference_mode():
        for shape in (SHAPES[0], SHAPES[1], SHAPES[0]):  # a new shape captures, a known one replays
            assert_matches_eager(graphs, eager, shape)
        assert len(graphs._graphs.graphs.keys()) == 2
        for shape in (*SHAPES[1:], SHAPES[0]):  # the last new shape evicts the first, which is captured again
            assert_matches_eager(graphs, eager, shape)
    assert graphs._graphs.graphs.keys() == [graph_key(torch.empty(1, 1, *shape), TIMESTEPS)
                                            for shape in (*SHAPES[2:], SHAPES[0])]
    assert graphs.degraded == "" and torch.cuda.current_stream() == torch.cuda.default_stream()


@cuda_only
def test_a_failed_capture_runs_eager_on_cuda_and_is_not_retried(cuda_dit, monkeypatch):
    attempts = []

    def refused_capture(*args, **kwargs):
        attempts.append(args)
        raise RuntimeError("capture refused (test)")

    monkeypatch.setattr(torch.cuda, "graph", refused_capture)
    device, logs = torch.device("cuda"), []
    graphs = CudaGraphBackend(cuda_dit, nn.Identity(), device, "fp32", log=logs.append)
    eager = TorchBackend(cuda_dit, nn.Identity(), device, "fp32")
    with torch.inference_mode():
        for shape in (SHAPES[0], SHAPES[0], SHAPES[1]):
            image, semantics, noise = inputs(*shape, device="cuda")
            assert torch.equal(graphs.sample(image, semantics, noise, TIMESTEPS),
                               eager.sample(image, semantics, noise, TIMESTEPS))
    assert len(attempts) == 2 and len(logs) == 2  # one try and one line per shape
    assert "capture refused (test)" in graphs.degraded and graphs._graphs.graphs.keys() == []
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
