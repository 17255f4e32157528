"""The one loader from files to a ready model (``inference/loader.py``): bundled defaults (image and video),
auto backend, device check, model names; and the node's request made from its settings."""
import pytest
import torch
from checkpoint_files import write_video_checkpoints

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.checkpoints import CheckpointError
from pixel_perfect_ros.inference.loader import (
    BUNDLED_VIDEO_WARNING,
    BUNDLED_WARNING,
    ModelRequest,
    load_model,
    model_name,
    resolve_backend,
    torch_device,
)
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.inference.preprocess import processing_size
from pixel_perfect_ros.inference.video_pipeline import PixelPerfectVideoDepth
from pixel_perfect_ros.ros.parameters import NodeSettings, model_request


def test_model_name_names_the_files_and_marks_the_bundled_model():
    given = ModelRequest(checkpoint="/models/ppd.pth", semantics="/models/depth_anything_v2_vitl.pth")
    assert model_name(given) == "ppd.pth + depth_anything_v2_vitl.pth (da2)"
    shipped = ModelRequest(checkpoint=str(bundled.CHECKPOINT), semantics=str(bundled.SEMANTICS),
                           semantics_type=bundled.SEMANTICS_TYPE)
    assert model_name(shipped) == "bundled ppd.pth + moge2.pt (moge2)"
    video = ModelRequest(checkpoint="/m/ppvd.pth", semantics="/m/model.safetensors", video=True)
    assert model_name(video) == "ppvd.pth + model.safetensors (pi3)"
    shipped_video = ModelRequest(checkpoint=str(bundled.VIDEO_CHECKPOINT), semantics=str(bundled.VIDEO_SEMANTICS),
                                 video=True)
    assert model_name(shipped_video) == "bundled ppvd.pth + pi3.safetensors (pi3)"


def test_without_files_the_bundled_model_at_its_own_area_with_a_warning():
    loaded = load_model(ModelRequest())
    assert isinstance(loaded.model, PixelPerfectDepth)
    assert (loaded.request.checkpoint, loaded.request.semantics, loaded.request.semantics_type) == (
        str(bundled.CHECKPOINT), str(bundled.SEMANTICS), bundled.SEMANTICS_TYPE)
    assert loaded.model.target_area == loaded.request.target_area == bundled.TARGET_AREA
    assert loaded.model.metric_model is None  # the bundled MoGe-2 file is an encoder only
    assert loaded.warnings == (BUNDLED_WARNING,) and "bundled tiny model" in BUNDLED_WARNING
    assert loaded.name.startswith("bundled ")
    assert (loaded.backend_requested, loaded.backend, loaded.backend_fallback) == ("auto (torch)", "torch", "")


def test_a_given_area_and_steps_are_kept_for_the_bundled_model():
    loaded = load_model(ModelRequest(target_area=64 * 48, steps=2, seed=None))
    assert (loaded.model.target_area, loaded.model.steps, loaded.model.seed) == (64 * 48, 2, None)


def test_one_file_without_the_other_is_refused_with_the_download_instructions():
    with pytest.raises(CheckpointError, match="set both 'checkpoint' and 'semantics'") as error:
        load_model(ModelRequest(checkpoint="/models/ppd.pth"))
    assert "huggingface.co" in str(error.value)


def test_a_video_request_without_files_loads_the_bundled_video_model_with_a_warning(tmp_path, monkeypatch):
    ppvd, pi3 = write_video_checkpoints(tmp_path)  # tiny random models standing in for the shipped files
    monkeypatch.setattr(bundled, "VIDEO_CHECKPOINT", ppvd)
    monkeypatch.setattr(bundled, "VIDEO_SEMANTICS", pi3)
    loaded = load_model(ModelRequest(video=True, steps=2))
    assert isinstance(loaded.model, PixelPerfectVideoDepth) and loaded.model.steps == 2
    assert (loaded.request.checkpoint, loaded.request.semantics) == (str(ppvd), str(pi3))
    assert loaded.request.target_area is None  # PPVD runs at its DiT's own input size
    assert loaded.warnings == (BUNDLED_VIDEO_WARNING,) and "synthetic rooms" in BUNDLED_VIDEO_WARNING
    assert loaded.name == "bundled ppvd.pth + pi3.safetensors (pi3)"
    assert (loaded.backend_requested, loaded.backend) == ("auto (torch)", "torch")


def test_without_the_bundled_video_files_a_video_request_names_them_and_the_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled, "VIDEO_CHECKPOINT", tmp_path / "ppvd.pth")
    monkeypatch.setattr(bundled, "VIDEO_SEMANTICS", tmp_path / "pi3.safetensors")
    with pytest.raises(CheckpointError, match="bundled video model is not installed") as error:
        load_model(ModelRequest(video=True))
    assert str(tmp_path / "ppvd.pth") in str(error.value) and "yyfz233/Pi3" in str(error.value)


def test_a_video_checkpoint_without_its_semantics_is_refused():
    with pytest.raises(CheckpointError, match="set both 'checkpoint' and 'semantics'"):
        load_model(ModelRequest(video=True, checkpoint="/models/ppvd.pth"))


def test_a_backend_that_cannot_start_falls_back_to_torch_with_the_reason_as_a_warning():
    loaded = load_model(ModelRequest(backend="torch_cuda_graph"))
    assert (loaded.backend_requested, loaded.backend) == ("torch_cuda_graph", "torch")
    assert loaded.backend_fallback and loaded.backend_fallback in loaded.warnings


def test_auto_backend_and_device_checks():
    assert resolve_backend(ModelRequest(device="cpu")) == "torch"
    assert resolve_backend(ModelRequest(device="cuda")) == "torch_cuda_graph"
    assert resolve_backend(ModelRequest(device="cuda", video=True)) == "torch"
    assert resolve_backend(ModelRequest(backend="onnxruntime")) == "onnxruntime"
    assert torch_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        torch_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            torch_device("cuda:0")


def test_the_node_asks_for_the_models_own_area_when_target_area_is_at_its_default():
    assert model_request(NodeSettings()).target_area is None
    request = model_request(NodeSettings(target_area=4096, seed=-1, mode="video", moge2_checkpoint="/m/moge2.pt",
                                         engine_file_path="/engines", max_processing_width=512))
    assert (request.target_area, request.seed, request.video, request.metric_checkpoint) == (
        4096, None, True, "/m/moge2.pt")
    assert (request.backend_options.engine_file_path, request.backend_options.max_width) == ("/engines", 512)


def test_the_derived_shape_range_covers_4_3_and_16_9_cameras_in_both_orientations():
    options = model_request(NodeSettings()).backend_options
    assert (options.max_height, options.max_width, options.opt_height, options.opt_width) == (1184, 1184, 768, 1024)
    for height, width in ((720, 1280), (1080, 1920), (480, 640), (1024, 768), (1920, 1080)):
        run_h, run_w = processing_size(height, width, NodeSettings().target_area)
        assert run_h <= options.max_height and run_w <= options.max_width
    options = model_request(NodeSettings(max_processing_width=512)).backend_options
    assert (options.max_height, options.max_width, options.opt_height, options.opt_width) == (1184, 512, 768, 512)
