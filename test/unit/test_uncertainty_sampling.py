"""Several diffusion samples per image (PixelPerfectDepth ``samples``): each sample is the run of its own seed,
one semantics pass per call, the DiT on a batch of N chunked by the backend's ``max_batch`` (never a
fallback), N = 1 exactly as before, and the backends' batch limits. On the bundled model, CPU."""

import numpy as np
import pytest
import torch
from fake_onnxruntime import FakeOrt
from torch import nn

from pixel_perfect_ros.geometry.decoding import RelativeDecoder
from pixel_perfect_ros.geometry.uncertainty import sample_spread
from pixel_perfect_ros.inference import bundled, onnx_export
from pixel_perfect_ros.inference.backends import BackendOptions, profiles
from pixel_perfect_ros.inference.backends import onnxruntime_backend as ortb
from pixel_perfect_ros.inference.backends.base import Backend
from pixel_perfect_ros.inference.backends.fallback import FallbackBackend
from pixel_perfect_ros.inference.backends.tensorrt_backend import TensorRTBackend
from pixel_perfect_ros.inference.backends.torch_backend import TorchBackend
from pixel_perfect_ros.inference.pipeline import MAX_SAMPLES, PixelPerfectDepth
from pixel_perfect_ros.inference.preprocess import image_to_device, resize_depth, resize_to_processing
from pixel_perfect_ros.inference.sampling import seeded_noise

CPU = torch.device("cpu")
SEED = 5
BATCH_TOLERANCE = 1e-5
"""Sample i of a batch vs the one-sample run of seed + i, normalised log-depth (O(1)): batched matmuls may
round differently in the last bits. Measured (bundled model, 2 steps, CPU fp32, torch 2.13): 0, bit-identical,
with the image and semantics passed as expanded views; 1.3e-6 when they were dense copies (other strides)."""


def bundled_model(**kwargs) -> PixelPerfectDepth:
    return PixelPerfectDepth.from_checkpoints(bundled.CHECKPOINT, bundled.SEMANTICS, bundled.SEMANTICS_TYPE,
                                              target_area=bundled.TARGET_AREA, steps=2, **kwargs)


@pytest.fixture(scope="module")
def model():
    return bundled_model(seed=SEED)


@pytest.fixture
def fresh(model):
    """The module's model, its samples and seed restored after the test."""
    backend, samples, seed = model.backend, model.samples, model.seed
    yield model
    model.backend, model.samples, model.seed = backend, samples, seed


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)


def single_runs(model, image, seeds):
    """One-sample predictions of ``image`` with each of ``seeds``."""
    model.samples = 1
    runs = []
    for seed in seeds:
        model.seed = seed
        runs.append(model(image))
    return runs


def test_each_sample_is_the_run_of_its_own_seed(fresh, image):
    fresh.samples = 3
    prediction = fresh(image)
    singles = single_runs(fresh, image, [SEED, SEED + 1, SEED + 2])
    assert prediction.samples.shape == (3, 60, 90) and prediction.processing_samples.shape == (3, 96, 128)
    assert prediction.samples.dtype == prediction.processing_samples.dtype == np.float32
    for sample, processing_sample, single in zip(prediction.samples, prediction.processing_samples, singles):
        assert np.abs(processing_sample - single.processing_depth).max() < BATCH_TOLERANCE
        assert np.abs(sample - single.depth).max() < BATCH_TOLERANCE
    assert np.abs(prediction.samples[0] - prediction.samples[1]).max() > 0.05  # the seeds differ
    # The prediction is the mean in normalised log-depth, resized as the samples are.
    np.testing.assert_allclose(prediction.processing_depth, prediction.processing_samples.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(prediction.depth, prediction.samples.mean(axis=0), atol=1e-6)
    # Its spread is the spread of separately seeded runs.
    spread = sample_spread(RelativeDecoder(), prediction.samples)
    expected = sample_spread(RelativeDecoder(), np.stack([single.depth for single in singles]))
    assert np.isfinite(spread).all() and spread.max() > 0.01
    np.testing.assert_allclose(spread, expected, rtol=1e-4, atol=1e-5)
    assert set(prediction.timings_ms) == {"preprocess", "semantics", "sampling", "postprocess"}


def test_without_a_seed_every_sample_and_call_is_fresh(image):
    model = bundled_model(seed=None, samples=2)
    first, second = model(image), model(image)
    assert not np.array_equal(first.samples[0], first.samples[1])
    assert not np.array_equal(first.samples, second.samples)


def test_one_sample_is_bit_identical_to_the_single_sample_pipeline(fresh, image):
    """The steps of the one-sample pipeline spelt out: the output must be these tensors, bit for bit, also
    after sampling more and going back to 1 (the noise cache is rebuilt then)."""
    with torch.inference_mode():
        x = image_to_device(resize_to_processing(image, bundled.TARGET_AREA), CPU)
        semantics = fresh.backend.encode(x)
        depth = fresh.backend.sample(x, semantics, seeded_noise((1, 1, *x.shape[-2:]), SEED), fresh.timesteps)
        full = resize_depth(depth, 60, 90)
    for samples in (1, 4, 1):
        fresh.samples = samples
        prediction = fresh(image)
    assert prediction.samples is None and prediction.processing_samples is None
    assert np.array_equal(prediction.processing_depth, depth[0, 0].numpy())
    assert np.array_equal(prediction.depth, full[0, 0].numpy())


@pytest.mark.parametrize("samples", [0, MAX_SAMPLES + 1, -1, 2.0, True, "2", None])
def test_samples_must_be_an_integer_from_1_to_16(fresh, samples):
    fresh.samples = 3
    with pytest.raises(ValueError, match=f"samples must be an integer from 1 to {MAX_SAMPLES}"):
        fresh.samples = samples
    assert fresh.samples == 3  # unchanged
    with pytest.raises(ValueError, match="samples must be an integer"):
        bundled_model(samples=samples)


def test_samples_default_to_one_and_take_the_whole_range(fresh):
    assert bundled_model().samples == 1
    for samples in (1, 2, MAX_SAMPLES, np.int64(4)):
        fresh.samples = samples
        assert fresh.samples == samples and type(fresh.samples) is int


# ---- one semantics pass, N frames per DiT step, chunks of max_batch --------------------------------

def count_calls(monkeypatch, model):
    """Counters of the backend's encode and sample calls and the batch the DiT sees at each step."""
    seen = {"encode": 0, "sample": [], "dit": []}
    backend = model.backend
    encode, sample = backend.encode, backend.sample

    def counting_encode(image):
        seen["encode"] += 1
        return encode(image)

    def counting_sample(image, semantics, noise, timesteps):
        seen["sample"].append(len(noise))
        return sample(image, semantics, noise, timesteps)

    monkeypatch.setattr(backend, "encode", counting_encode)
    monkeypatch.setattr(backend, "sample", counting_sample)
    hook = model.dit.register_forward_pre_hook(lambda module, args: seen["dit"].append(args[0].shape[0]))
    return seen, hook


@pytest.mark.parametrize("samples", [1, 3])
def test_one_semantics_pass_and_the_dit_sees_n_frames_per_step(fresh, image, monkeypatch, samples):
    fresh.samples = samples
    seen, hook = count_calls(monkeypatch, fresh)
    try:
        fresh(image)
    finally:
        hook.remove()
    assert seen == {"encode": 1, "sample": [samples], "dit": [samples] * 2}  # 2 steps


def test_the_shared_moge2_encoder_runs_once_too(tiny_checkpoints, image, monkeypatch):
    model = PixelPerfectDepth.from_checkpoints(tiny_checkpoints["ppd_moge"], tiny_checkpoints["moge2"], "moge2",
                                               metric_checkpoint=tiny_checkpoints["moge2"], target_area=64 * 48,
                                               steps=1, samples=3)
    assert model.shared_encoder
    calls = []
    encode = model.semantics_encoder.encode
    monkeypatch.setattr(model.semantics_encoder, "encode", lambda x: calls.append(x.shape[0]) or encode(x))
    prediction = model(image, metric_reference=True)
    assert calls == [1] and prediction.samples.shape == (3, 60, 90) and prediction.metric_reference is not None


class BatchLimitedBackend(TorchBackend):
    """A compiled backend's batch limit: refuses batches above ``max_batch``, counts its calls' batches."""

    name = "tensorrt"

    def __init__(self, *args, max_batch=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_batch, self.batches = max_batch, []

    def shape_refusal(self, n, height, width):
        return f"the engines take batch {self.max_batch}, got {n}" if n > self.max_batch else None

    def sample(self, image, semantics, noise, timesteps):
        assert image.shape[0] == semantics.shape[0] == noise.shape[0] <= self.max_batch
        self.batches.append(len(noise))
        return super().sample(image, semantics, noise, timesteps)


def no_rebuild(options):
    raise AssertionError("the primary was rebuilt")


@pytest.mark.parametrize("max_batch, batches", [(1, [1, 1, 1]), (2, [2, 1])])
def test_samples_run_in_chunks_of_max_batch_without_a_fallback(fresh, image, max_batch, batches):
    fresh.samples = 3
    batched = fresh(image)
    logs = []
    primary = BatchLimitedBackend(fresh.dit, fresh.semantics_encoder, CPU, "fp32", max_batch=max_batch)
    fresh.backend = FallbackBackend(primary, no_rebuild, logs.append)
    assert fresh.backend.max_batch == max_batch
    chunked = fresh(image)
    assert primary.batches == batches
    assert fresh.backend.name == "tensorrt" and fresh.backend_fallback == "" and logs == []
    assert np.abs(chunked.samples - batched.samples).max() < BATCH_TOLERANCE
    if max_batch == 1:  # one sample per call: exactly the one-sample runs of each seed
        singles = single_runs(fresh, image, [SEED, SEED + 1, SEED + 2])
        assert all(np.array_equal(sample, single.depth) for sample, single in zip(chunked.samples, singles))


# ---- the backends' batch limits --------------------------------------------------------------------

def test_batch_limits_of_the_backends(model):
    assert Backend.max_batch is None and TorchBackend.max_batch is None
    assert TensorRTBackend.max_batch == profiles.BATCH == 1
    primary = BatchLimitedBackend(model.dit, model.semantics_encoder, CPU, "fp32", max_batch=2)
    wrapper = FallbackBackend(primary, no_rebuild, lambda line: None)
    assert wrapper.max_batch == 2
    wrapper.primary = None  # while it is rebuilt
    assert wrapper.max_batch == 1
    wrapper._fall_back("test")
    assert wrapper.max_batch is None and wrapper.name == "torch"


TRT, CUDA, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.mark.parametrize("device, dtype, available, running, max_batch", [
    ("cpu", "fp32", [CPU_EP], [CPU_EP], onnx_export.MAX_BATCH),  # the exported graphs' range
    ("cuda:1", "fp16", [TRT, CUDA, CPU_EP], [CUDA, CPU_EP], onnx_export.MAX_BATCH),
    ("cuda:1", "fp16", [TRT, CUDA, CPU_EP], [TRT, CUDA, CPU_EP], profiles.BATCH),  # its TensorRT profile
])
def test_onnxruntime_batch_limit_is_what_its_sessions_take(monkeypatch, tmp_path, device, dtype, available,
                                                           running, max_batch):
    monkeypatch.setattr(onnx_export, "exported_graphs",
                        lambda *args, **kwargs: (tmp_path / "encoder.onnx", tmp_path / "dit_step.onnx"))
    monkeypatch.setattr(ortb, "import_onnxruntime", lambda: FakeOrt(available, {"encoder": running, "dit_step": running}))
    backend = ortb.OnnxRuntimeBackend(nn.Identity(), nn.Identity(), torch.device(device), dtype,
                                      BackendOptions(engine_file_path=str(tmp_path / "engines")))
    assert backend.max_batch == max_batch
    assert backend.shape_refusal(max_batch, 96, 128) is None and backend.shape_refusal(max_batch + 1, 96, 128)
