"""The backend interface (inference/backends/base.py) and the torch backend, on the bundled model."""
import pytest
import torch

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.backends import BACKENDS, create_backend
from pixel_perfect_ros.inference.backends.base import backend_class, error_summary
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.inference.sampling import sample_depth
from pixel_perfect_ros.model.flow import sampling_timesteps


@pytest.fixture(scope="module")
def model():
    return PixelPerfectDepth.from_checkpoints(bundled.CHECKPOINT, bundled.SEMANTICS, bundled.SEMANTICS_TYPE)


def test_torch_backend_is_the_official_loop(model):
    backend, reason = create_backend("torch", model.dit, model.semantics_encoder, torch.device("cpu"), "fp32")
    assert backend.name == "torch" and reason == ""
    assert backend.shape_refusal(1, 672, 1184) is None and (backend.degraded, backend.fallback) == ("", "")
    image, noise = torch.rand(1, 3, 32, 48), torch.randn(1, 1, 32, 48)
    timesteps = sampling_timesteps(2)
    with torch.inference_mode():
        semantics = backend.encode(image)
        assert torch.equal(semantics, model.semantics_encoder.forward_semantics(image))
        expected = sample_depth(model.dit, image, semantics, noise, timesteps)
        assert torch.equal(backend.sample(image, semantics, noise, timesteps), expected)


def test_the_pipeline_runs_its_backend(model):
    assert model.backend.name == "torch" and model.backend_fallback == ""
    assert BACKENDS[0] == "torch"


def test_unknown_backend_and_dtype_are_errors(model):
    with pytest.raises(ValueError, match="backend must be one of"):
        backend_class("tensorflow")
    with pytest.raises(ValueError, match="dtype"):
        create_backend("torch", model.dit, model.semantics_encoder, torch.device("cpu"), "int8")


def test_error_summary_names_the_type_and_the_message():
    assert error_summary(NotADirectoryError(20, "Not a directory", "/a/b")) == (
        "NotADirectoryError: [Errno 20] Not a directory: '/a/b'")
    assert error_summary(RuntimeError("engine did not deserialize")) == "RuntimeError: engine did not deserialize"
    assert error_summary(RuntimeError()) == "RuntimeError"
    assert error_summary(RuntimeError("out of memory\nmore"), first_line=True) == "RuntimeError: out of memory"
    assert error_summary(RuntimeError("out of memory\nmore")) == "RuntimeError: out of memory\nmore"
