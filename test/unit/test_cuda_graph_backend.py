"""The torch_cuda_graph backend: unavailable without CUDA (create_backend falls back to torch with the
reason), its graph key and LRU, the precomputed-timestep loop it captures, and (CUDA only) parity with torch."""
import pytest
import torch

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.backends import BackendUnavailable, create_backend
from pixel_perfect_ros.inference.backends.base import default_backend
from pixel_perfect_ros.inference.backends.cuda_graph import CudaGraphBackend, LruCache, graph_key
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.inference.sampling import sample_depth
from pixel_perfect_ros.model.flow import sampling_timesteps


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (not run in the session that wrote it)")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_graph_replay_matches_torch_on_cuda(model, dtype):
    device = torch.device("cuda")
    dit, encoder = model.dit.to(device), model.semantics_encoder.to(device)
    graphs = CudaGraphBackend(dit, encoder, device, dtype)
    eager, _ = create_backend("torch", dit, encoder, device, dtype)
    timesteps = sampling_timesteps(4)
    with torch.inference_mode():
        for shape in ((32, 48), (48, 32), (32, 48)):  # a new shape captures, a known one replays
            image, noise = torch.rand(1, 3, *shape, device=device), torch.randn(1, 1, *shape, device=device)
            semantics = eager.encode(image)
            torch.testing.assert_close(graphs.sample(image, semantics, noise, timesteps),
                                       eager.sample(image, semantics, noise, timesteps), atol=1e-3, rtol=1e-3)
    assert len(graphs._graphs.keys()) == 2
    model.dit.cpu(), model.semantics_encoder.cpu()
