"""The onnxruntime backend: full sampling loops vs the torch backend, provider / dtype refusals, provider
options, the providers that really started (real CPU onnxruntime, and a stand-in for GPU builds)."""
import os
import stat

import pytest
import torch
from fake_onnxruntime import FakeOrt
from torch import nn

from pixel_perfect_ros.inference import bundled, onnx_export
from pixel_perfect_ros.inference.backends import BackendOptions, BackendUnavailable, create_backend
from pixel_perfect_ros.inference.backends import onnxruntime_backend as ortb
from pixel_perfect_ros.inference.backends.onnxruntime_backend import OnnxRuntimeBackend, choose_providers
from pixel_perfect_ros.inference.checkpoints import load_ppd_dit, load_semantics_encoder
from pixel_perfect_ros.inference.sampling import seeded_noise
from pixel_perfect_ros.model.flow import sampling_timesteps

CPU = torch.device("cpu")
TRT, CUDA, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


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


def test_cpu_sessions_report_the_cpu_provider_and_the_exported_range(backends):
    onnx_backend = backends[0].primary  # create_backend wraps it in a FallbackBackend
    assert isinstance(onnx_backend, OnnxRuntimeBackend)
    assert onnx_backend.providers == [CPU_EP] and onnx_backend.degraded == ""
    assert onnx_backend.session_providers == {"encoder": [CPU_EP], "dit_step": [CPU_EP]}
    assert onnx_backend.shape_refusal(2, 96, 128) is None  # the graphs take a batch (up to MAX_BATCH)
    refusal = onnx_backend.shape_refusal(1, 1024, 768)
    assert refusal.startswith("input N,H,W 1x1024x768 is outside the exported ONNX graphs' shape range")
    assert "multiples of 16" in onnx_backend.shape_refusal(1, 100, 128)


# ---- provider options (pure) --------------------------------------------------------------------

def test_provider_options_keep_the_device_and_configure_tensorrt(tmp_path):
    options = BackendOptions(engine_file_path=str(tmp_path), max_height=1184, max_width=1184,
                             opt_height=672, opt_width=1184)
    trt, cuda = ortb.provider_options([TRT, CUDA], torch.device("cuda:1"), "fp16", options)
    assert cuda == {"device_id": 1}
    cache = str(tmp_path / "ort_trt_cache")
    assert trt == {
        "device_id": 1, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True, "trt_timing_cache_path": cache, "trt_fp16_enable": True,
        # the native TensorRT backend's profile (profiles.profile_shapes), every input of both graphs
        "trt_profile_min_shapes": "image:1x3x32x32,x:1x4x32x32,semantics:1x4x1024,timestep:1",
        "trt_profile_opt_shapes": "image:1x3x672x1184,x:1x4x672x1184,semantics:1x3108x1024,timestep:1",
        "trt_profile_max_shapes": "image:1x3x1184x1184,x:1x4x1184x1184,semantics:1x5476x1024,timestep:1"}
    assert ortb.provider_options([TRT], torch.device("cuda"), "fp32", options)[0]["device_id"] == 0
    assert ortb.provider_options([TRT], torch.device("cuda"), "fp32", options)[0]["trt_fp16_enable"] is False
    assert ortb.provider_options([CPU_EP], CPU, "fp32", options) == [{}]


# ---- providers that did not start (a stand-in onnxruntime-gpu) ----------------------------------

@pytest.fixture
def gpu_build(monkeypatch, tmp_path):
    """Install a FakeOrt (returned by the fixture's call) and skip the export; the device is cuda:1."""
    monkeypatch.setattr(onnx_export, "exported_graphs",
                        lambda *args, **kwargs: (tmp_path / "encoder.onnx", tmp_path / "dit_step.onnx"))

    def start(running, available=(TRT, CUDA, CPU_EP)):
        fake = FakeOrt(available, running)
        monkeypatch.setattr(ortb, "import_onnxruntime", lambda: fake)
        options = BackendOptions(engine_file_path=str(tmp_path / "engines"))
        return fake, lambda: OnnxRuntimeBackend(nn.Identity(), nn.Identity(), torch.device("cuda:1"), "fp16", options)

    return start


def test_gpu_providers_that_all_fail_to_start_are_refused(gpu_build):
    _, make = gpu_build({"encoder": [CPU_EP], "dit_step": [CPU_EP]})
    with pytest.raises(BackendUnavailable, match=(
            "onnxruntime was asked for TensorrtExecutionProvider, CUDAExecutionProvider but the encoder "
            "session runs CPUExecutionProvider")):
        make()


def test_a_missing_tensorrt_provider_degrades_to_cuda_with_a_note(gpu_build, tmp_path):
    fake, make = gpu_build({"encoder": [CUDA, CPU_EP], "dit_step": [CUDA, CPU_EP]})
    umask = os.umask(0o077)  # the ORT-TRT cache folder is readable by other users all the same
    try:
        backend = make()
    finally:
        os.umask(umask)
    assert backend.providers == [CUDA, CPU_EP]
    assert backend.degraded == "TensorrtExecutionProvider did not start; running CUDAExecutionProvider"
    assert backend.shape_refusal(2, 768, 1024) is None  # the CUDA provider runs the exported range
    assert [s.providers for s in fake.sessions] == [[TRT, CUDA]] * 2
    assert [[o["device_id"] for o in s.provider_options] for s in fake.sessions] == [[1, 1]] * 2
    assert stat.S_IMODE((tmp_path / "engines" / "ort_trt_cache").stat().st_mode) == 0o755


def test_sessions_on_different_providers_are_both_reported(gpu_build):
    _, make = gpu_build({"encoder": [TRT, CUDA, CPU_EP], "dit_step": [CUDA, CPU_EP]})
    backend = make()
    assert backend.session_providers == {"encoder": [TRT, CUDA, CPU_EP], "dit_step": [CUDA, CPU_EP]}
    assert backend.providers == [TRT, CUDA, CPU_EP]
    assert backend.degraded == ("dit_step: TensorrtExecutionProvider did not start; "
                                "running CUDAExecutionProvider")
    # the TensorRT provider runs: its profile (N = 1) is the range
    assert "outside the ONNX Runtime TensorRT engines' shape range" in backend.shape_refusal(2, 768, 1024)


def test_all_requested_providers_started(gpu_build):
    _, make = gpu_build({"encoder": [TRT, CUDA, CPU_EP], "dit_step": [TRT, CUDA, CPU_EP]})
    backend = make()
    assert backend.providers == [TRT, CUDA, CPU_EP] and backend.degraded == ""
