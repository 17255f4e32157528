"""The onnxruntime backend: full sampling loops vs the torch backend, provider / dtype refusals."""
import pytest
import torch

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.backends import BackendOptions, BackendUnavailable, create_backend
from pixel_perfect_ros.inference.backends.onnxruntime_backend import OnnxRuntimeBackend, choose_providers
from pixel_perfect_ros.inference.checkpoints import load_ppd_dit, load_semantics_encoder
from pixel_perfect_ros.inference.sampling import seeded_noise
from pixel_perfect_ros.model.flow import sampling_timesteps

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    dit = load_ppd_dit(bundled.CHECKPOINT).eval().requires_grad_(False)
    encoder = load_semantics_encoder(bundled.SEMANTICS, bundled.SEMANTICS_TYPE).eval().requires_grad_(False)
    folder = tmp_path_factory.getbasetemp() / "onnx_cache"  # shared with test_onnx_export.py
    options = BackendOptions(engine_file_path=str(folder))
    onnx_backend, reason = create_backend("onnxruntime", dit, encoder, CPU, "fp32", options)
    assert reason == "" and onnx_backend.name == "onnxruntime"
    torch_backend, _ = create_backend("torch", dit, encoder, CPU, "fp32")
    return onnx_backend, torch_backend


@pytest.mark.parametrize("height, width", [(96, 128), (64, 48)])
def test_four_step_sampling_matches_torch(backends, height, width):
    onnx_backend, torch_backend = backends
    image = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height))
    noise = seeded_noise((2, 1, height, width), seed=width)
    timesteps = sampling_timesteps(4)
    with torch.inference_mode():
        semantics = onnx_backend.encode(image)
        expected_semantics = torch_backend.encode(image)
        depth = onnx_backend.sample(image, semantics, noise, timesteps)
        expected = torch_backend.sample(image, expected_semantics, noise, timesteps)
    assert semantics.dtype == depth.dtype == torch.float32 and depth.shape == (2, 1, height, width)
    assert (semantics - expected_semantics).abs().max() < 2e-3
    assert (depth - expected).abs().max() < 1e-3  # normalised log-depth (O(1)); measured ~1e-5


def test_fp16_on_cpu_is_refused_and_create_backend_falls_back_to_torch(backends):
    dit, encoder = backends[1].dit, backends[1].encoder
    with pytest.raises(BackendUnavailable, match="fp16 ONNX graphs need a CUDA execution provider"):
        OnnxRuntimeBackend(dit, encoder, CPU, "fp16")
    backend, reason = create_backend("onnxruntime", dit, encoder, CPU, "fp16")
    assert backend.name == "torch" and "backend onnxruntime unavailable (fp16 ONNX graphs need" in reason


def test_provider_choice():
    assert choose_providers(["CPUExecutionProvider"], CPU, "fp32") == ["CPUExecutionProvider"]
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(every, torch.device("cuda"), "fp16") == every[:2]
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], torch.device("cuda:1"), "fp32")
    with pytest.raises(BackendUnavailable, match="bf16"):
        choose_providers(every, torch.device("cuda"), "bf16")
