"""Backend fallbacks (inference/backends/fallback.py and create_backend): every start-up failure runs torch,
a failure on a frame switches to torch once and redoes the frame, an input outside a compiled backend's
shape range rebuilds it once; a requested stop (Interrupted) is never a failure. On the bundled model, CPU."""
import logging
from dataclasses import replace

import pytest
import torch

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.backends import BackendOptions, create_backend
from pixel_perfect_ros.inference.backends import tensorrt_backend
from pixel_perfect_ros.inference.backends.fallback import FallbackBackend
from pixel_perfect_ros.inference.backends.torch_backend import TorchBackend
from pixel_perfect_ros.inference.interrupt import Interrupted
from pixel_perfect_ros.inference.loader import ModelRequest, load_model
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.model.flow import sampling_timesteps

CPU = torch.device("cpu")
TIMESTEPS = sampling_timesteps(1)


@pytest.fixture(scope="module")
def model():
    return PixelPerfectDepth.from_checkpoints(bundled.CHECKPOINT, bundled.SEMANTICS, bundled.SEMANTICS_TYPE)


def inputs(height: int, width: int, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (n, 3, H, W) in [0, 1], noise (n, 1, H, W)), seeded."""
    generator = torch.Generator().manual_seed(height * width + n)
    return torch.rand(n, 3, height, width, generator=generator), torch.randn(n, 1, height, width, generator=generator)


class CountingBackend(TorchBackend):
    """Torch under another name, counting its calls; ``failure`` (when set) is raised by ``sample``."""

    name = "tensorrt"
    failure: BaseException | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def encode(self, image):
        self.calls += 1
        return super().encode(image)

    def sample(self, image, semantics, noise, timesteps):
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return super().sample(image, semantics, noise, timesteps)


class CompiledBackend(CountingBackend):
    """A compiled backend's shape range: refuses inputs outside ``options`` (and batches above 1)."""

    def shape_refusal(self, n, height, width):
        if n > 1:
            return f"the engines take batch 1, got {n}"
        if height > self.options.max_height or width > self.options.max_width:
            return f"outside its shape range (up to {self.options.max_width}x{self.options.max_height})"
        return None


def no_rebuild(options):
    raise AssertionError("the primary was rebuilt")


def wrapped(model, primary_class=CountingBackend, options=BackendOptions(), rebuild=no_rebuild):
    """(FallbackBackend around a ``primary_class``, its log lines)."""
    logs = []
    primary = primary_class(model.dit, model.semantics_encoder, CPU, "fp32", options)
    return FallbackBackend(primary, rebuild, logs.append), logs


def torch_depth(model, image, noise):
    """What the torch backend gives for ``image`` and ``noise``: (N, 1, H, W)."""
    backend = TorchBackend(model.dit, model.semantics_encoder, CPU, "fp32")
    return backend.sample(image, backend.encode(image), noise, TIMESTEPS)


# ---- failure on a frame -------------------------------------------------------------------------

@torch.inference_mode()
def test_a_failure_on_a_frame_switches_to_torch_once_and_redoes_the_frame(model):
    backend, logs = wrapped(model)
    primary = backend.primary
    image, noise = inputs(32, 48)
    semantics = backend.encode(image)
    assert (backend.name, backend.fallback, primary.calls) == ("tensorrt", "", 1)
    primary.failure = RuntimeError("CUDA error: an illegal memory access was encountered")
    depth = backend.sample(image, semantics, noise, TIMESTEPS)
    assert torch.equal(depth, torch_depth(model, image, noise))  # the failing frame is not lost
    reason = ("backend tensorrt failed on a frame (RuntimeError: CUDA error: an illegal memory access was "
              "encountered); running torch for the rest of the run")
    assert (backend.name, backend.fallback, logs, primary.calls) == ("torch", reason, [reason], 2)
    for height, width in ((32, 48), (48, 32)):  # later frames: torch only, no new log line
        image, noise = inputs(height, width)
        assert torch.equal(backend.sample(image, backend.encode(image), noise, TIMESTEPS),
                           torch_depth(model, image, noise))
    assert primary.calls == 2 and logs == [reason] and backend.primary is None


@torch.inference_mode()
def test_a_requested_stop_propagates_and_is_no_fallback(model):
    backend, logs = wrapped(model)
    image, noise = inputs(32, 48)
    semantics = backend.encode(image)
    backend.primary.failure = Interrupted("inference stopped on request (in Block)")
    with pytest.raises(Interrupted):
        backend.sample(image, semantics, noise, TIMESTEPS)
    assert (backend.name, backend.fallback, logs) == ("tensorrt", "", [])
    backend.primary.failure = None
    backend.sample(image, semantics, noise, TIMESTEPS)
    assert backend.primary.calls == 3  # still the primary


def test_create_backend_wraps_a_started_backend_and_passes_the_log(model, monkeypatch):
    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", CountingBackend)
    logs = []
    backend, reason = create_backend("tensorrt", model.dit, model.semantics_encoder, CPU, "fp32", log=logs.append)
    assert isinstance(backend, FallbackBackend) and isinstance(backend.primary, CountingBackend)
    assert (backend.name, reason) == ("tensorrt", "")
    backend.primary.failure = ValueError("input N,H,W 1x32x48 is outside the engines' profile")
    image, noise = inputs(32, 48)
    with torch.inference_mode():
        backend.sample(image, backend.encode(image), noise, TIMESTEPS)
    assert backend.name == "torch" and logs == [backend.fallback] and "ValueError: input N,H,W" in logs[0]
    plain, _ = create_backend("torch", model.dit, model.semantics_encoder, CPU, "fp32")
    assert type(plain) is TorchBackend  # torch itself is not wrapped


def test_without_a_log_the_notes_go_to_the_logger_as_warnings(model, monkeypatch, caplog):
    class FailingOnFrames(CountingBackend):
        failure = RuntimeError("cudaErrorLaunchFailure")

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", FailingOnFrames)
    image, noise = inputs(32, 48)
    for make in (lambda: create_backend("tensorrt", model.dit, model.semantics_encoder, CPU, "fp32")[0],
                 lambda: PixelPerfectDepth(model.dit, model.semantics_encoder, backend="tensorrt").backend):
        caplog.clear()
        backend = make()
        with caplog.at_level(logging.WARNING), torch.inference_mode():
            backend.sample(image, backend.encode(image), noise, TIMESTEPS)
        assert [record.getMessage() for record in caplog.records] == [backend.fallback]
        assert caplog.records[0].levelno == logging.WARNING


# ---- start-up failures --------------------------------------------------------------------------

@pytest.mark.parametrize("error", [
    NotADirectoryError(20, "Not a directory", "/home/robot/engines.tar/cache"),
    PermissionError(13, "Permission denied", "/opt/engines"),
    RuntimeError("engine did not deserialize"),
], ids=lambda error: type(error).__name__)
def test_any_start_up_failure_runs_torch_with_the_reason(model, monkeypatch, error):
    class Failing(CountingBackend):
        def __init__(self, *args, **kwargs):
            raise error

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Failing)
    backend, reason = create_backend("tensorrt", model.dit, model.semantics_encoder, CPU, "fp32")
    assert type(backend) is TorchBackend
    assert reason == f"backend tensorrt failed to start ({type(error).__name__}: {error}); running torch instead"


def test_a_stop_during_start_up_propagates(model, monkeypatch):
    class Stopped(CountingBackend):
        def __init__(self, *args, **kwargs):
            raise Interrupted("inference stopped on request (in Linear)")

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Stopped)
    with pytest.raises(Interrupted):
        create_backend("tensorrt", model.dit, model.semantics_encoder, CPU, "fp32")


def test_an_unknown_name_or_dtype_stays_an_error(model):
    with pytest.raises(ValueError, match="backend must be one of"):
        create_backend("tensorflow", model.dit, model.semantics_encoder, CPU, "fp32")
    with pytest.raises(ValueError, match="dtype must be one of"):
        create_backend("onnxruntime", model.dit, model.semantics_encoder, CPU, "int8")


def test_onnxruntime_with_an_engine_folder_under_a_file_runs_torch(model, tmp_path):
    (tmp_path / "engines.tar").write_bytes(b"not a folder")
    options = BackendOptions(engine_file_path=str(tmp_path / "engines.tar" / "cache"))
    backend, reason = create_backend("onnxruntime", model.dit, model.semantics_encoder, CPU, "fp32", options)
    assert type(backend) is TorchBackend
    assert reason.startswith("backend onnxruntime failed to start (NotADirectoryError: ")
    assert reason.endswith("; running torch instead")


# ---- inputs outside a compiled backend's shape range -------------------------------------------

SMALL_RANGE = BackendOptions(max_height=48, max_width=64)
"""Engines up to 64x48 (W x H): an 80x48 input is outside, and so is its transpose."""


class Factory:
    """Builds ``CompiledBackend`` (or raises ``failure``), recording the options it is given."""

    def __init__(self, model, failure: Exception | None = None):
        self.model, self.failure, self.options = model, failure, []

    def __call__(self, options):
        self.options.append(options)
        if self.failure is not None:
            raise self.failure
        return CompiledBackend(self.model.dit, self.model.semantics_encoder, CPU, "fp32", options)


@torch.inference_mode()
def test_an_input_outside_the_range_rebuilds_once_covering_both_orientations(model):
    factory = Factory(model)
    backend, logs = wrapped(model, CompiledBackend, SMALL_RANGE, factory)
    first = backend.primary
    image, noise = inputs(48, 80)
    depth = backend.sample(image, backend.encode(image), noise, TIMESTEPS)
    assert factory.options == [replace(SMALL_RANGE, max_height=80, max_width=80, opt_height=48, opt_width=80)]
    assert logs == ["rebuilding tensorrt for 80x48 (W x H), range up to 80x80: outside its shape range "
                    "(up to 64x48)"]
    assert backend.primary is not first and first.calls == 0 and backend.primary.calls == 2
    assert torch.equal(depth, torch_depth(model, image, noise))
    for height, width in ((48, 80), (80, 48)):  # covered now, in both orientations: no more rebuilds
        image, noise = inputs(height, width)
        backend.sample(image, backend.encode(image), noise, TIMESTEPS)
    assert len(factory.options) == 1 and len(logs) == 1
    assert (backend.name, backend.fallback, backend.options) == ("tensorrt", "", factory.options[0])


@torch.inference_mode()
def test_a_failing_rebuild_runs_torch_with_the_reason(model):
    factory = Factory(model, RuntimeError("TensorRT built no engine"))
    backend, logs = wrapped(model, CompiledBackend, SMALL_RANGE, factory)
    image, noise = inputs(48, 80)
    semantics = backend.encode(image)
    reason = ("backend tensorrt failed to rebuild for 80x48 (RuntimeError: TensorRT built no engine); running "
              "torch for the rest of the run")
    assert (backend.name, backend.fallback, len(factory.options)) == ("torch", reason, 1)
    assert logs[0].startswith("rebuilding tensorrt for 80x48") and logs[1:] == [reason]
    assert torch.equal(backend.sample(image, semantics, noise, TIMESTEPS), torch_depth(model, image, noise))
    assert len(factory.options) == 1 and len(logs) == 2


@torch.inference_mode()
def test_a_refusal_inside_the_range_runs_torch_without_a_rebuild(model):
    factory = Factory(model)
    backend, logs = wrapped(model, CompiledBackend, SMALL_RANGE, factory)
    image, noise = inputs(32, 48, n=2)
    depth = backend.sample(image, backend.encode(image), noise, TIMESTEPS)
    assert factory.options == [] and backend.name == "torch" and logs == [backend.fallback]
    assert "refuses 48x32 within its shape range (the engines take batch 1, got 2)" in backend.fallback
    assert torch.equal(depth, torch_depth(model, image, noise))


# ---- through the pipeline and the loader --------------------------------------------------------

def test_the_pipeline_reports_the_run_time_fallback_and_runs_torch(model, monkeypatch):
    class FailingOnFrames(CountingBackend):
        failure = RuntimeError("TensorRT execute_async_v3 failed")

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", FailingOnFrames)
    logs = []
    pipeline = PixelPerfectDepth(model.dit, model.semantics_encoder, steps=2, target_area=32 * 48,
                                 backend="tensorrt", log=logs.append)
    reference = PixelPerfectDepth(model.dit, model.semantics_encoder, steps=2, target_area=32 * 48)
    assert (pipeline.backend.name, pipeline.backend_fallback) == ("tensorrt", "")
    image = (torch.rand(40, 60, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    assert (pipeline(image).depth == reference(image).depth).all()
    assert pipeline.backend.name == "torch"
    assert pipeline.backend_fallback == logs[0] and len(logs) == 1
    assert "backend tensorrt failed on a frame (RuntimeError: TensorRT execute_async_v3 failed)" in logs[0]


def test_the_pipeline_reports_a_degraded_backend(model, monkeypatch):
    class Degraded(CountingBackend):
        degraded = "the CUDA execution provider did not start: running on the CPU provider"

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Degraded)
    pipeline = PixelPerfectDepth(model.dit, model.semantics_encoder, backend="tensorrt")
    assert (pipeline.backend.name, pipeline.backend_fallback) == ("tensorrt", Degraded.degraded)


def test_the_loaded_model_reports_the_backend_live(monkeypatch):
    class FailingOnFrames(CountingBackend):
        failure = RuntimeError("cudaErrorLaunchFailure")

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", FailingOnFrames)
    logs = []
    loaded = load_model(ModelRequest(backend="tensorrt", steps=1), log=logs.append)
    assert (loaded.backend_requested, loaded.backend, loaded.backend_fallback) == ("tensorrt", "tensorrt", "")
    loaded.model(torch.zeros(48, 64, 3, dtype=torch.uint8).numpy())
    assert loaded.backend == "torch" and loaded.backend_fallback == logs[0] and "cudaErrorLaunchFailure" in logs[0]
