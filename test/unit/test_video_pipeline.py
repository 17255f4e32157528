"""PPVD video pipeline (inference/video_pipeline.py) and the ``ppd-infer-video`` CLI on tiny random models.

The small Pi3 parity fixture is 64 wide (128-d tokens) and the video DiT's fusion takes 2048-d tokens, so
these tests use a tiny random Pi3 that is 1024 wide (``checkpoint_files.tiny_video_models``).
"""
import cv2
import numpy as np
import pytest
import torch
from checkpoint_files import tiny_video_models, write_video_checkpoints

from pixel_perfect_ros.inference.checkpoints import pi3_semantics_from_state_dict
from pixel_perfect_ros.inference.video_pipeline import PixelPerfectVideoDepth
from pixel_perfect_ros.inference.video_windows import align_video_depth
from pixel_perfect_ros.tools import infer_video

HEIGHT, WIDTH = 24, 40


@pytest.fixture(scope="module")
def models():
    return tiny_video_models()


@pytest.fixture(scope="module")
def checkpoints(models, tmp_path_factory):
    """(ppvd.pth, pi3.safetensors) in the official formats."""
    return write_video_checkpoints(tmp_path_factory.mktemp("ppvd"), models)


def _clip(num_frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, HEIGHT, WIDTH, 3), dtype=np.uint8)


def _pipeline(models, seed=0, steps=2):
    return PixelPerfectVideoDepth(*models, steps=steps, seed=seed)


@pytest.mark.parametrize("num_frames", [2, 16, 20])
def test_depth_has_one_map_per_input_frame(models, num_frames):
    prediction = _pipeline(models)(_clip(num_frames))
    assert prediction.depth.shape == (num_frames, HEIGHT, WIDTH)
    assert prediction.depth.dtype == np.float32
    assert np.isfinite(prediction.depth).all()
    assert set(prediction.timings_ms) == {"preprocess", "semantics", "sampling", "postprocess"}


def test_seed_makes_it_deterministic(models):
    clip = _clip(5)
    first, again = _pipeline(models, seed=3)(clip).depth, _pipeline(models, seed=3)(clip).depth
    other = _pipeline(models, seed=4)(clip).depth
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4


def test_window_zero_is_not_changed_by_alignment(models):
    """The first 16 frames of a 2-window clip are window 0's prediction, as for the 16-frame clip alone."""
    clip = _clip(20)
    long, short = _pipeline(models)(clip).depth, _pipeline(models)(clip[:16]).depth
    np.testing.assert_allclose(long[:16], short, rtol=0, atol=1e-5)


def test_all_windows_start_from_the_same_noise(models):
    """A still clip gives window 1 == window 0 (same frames, same noise), chained by the spec's alignment."""
    still = np.repeat(_clip(1), 29, axis=0)  # 29 frames: exactly 2 windows
    window0 = _pipeline(models)(still[:16]).depth  # (16, H, W)
    expected = align_video_depth([window0, window0])
    np.testing.assert_allclose(_pipeline(models)(still).depth, expected, rtol=0, atol=1e-4)


def test_progress_is_reported_per_window(models):
    calls = []
    _pipeline(models, steps=1)(_clip(20), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_rejects_bad_frames_and_narrow_semantics(models, fixtures_dir):
    with pytest.raises(ValueError, match="uint8"):
        _pipeline(models)(_clip(3).astype(np.float32))
    path = fixtures_dir / "encoders" / "sem_pi3_small_state_w002.pt"
    narrow = pi3_semantics_from_state_dict(torch.load(path, weights_only=True), path)  # 128-d tokens
    with pytest.raises(ValueError, match="2048"):
        PixelPerfectVideoDepth(models[0], narrow)


def _run_cli(source, checkpoints, out, *extra):
    ppvd, pi3 = checkpoints
    return infer_video.main([str(source), "--checkpoint", str(ppvd), "--semantics", str(pi3), "--out", str(out),
                             "--steps", "1", *extra])


def test_cli_on_a_folder_of_images(checkpoints, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(_clip(5)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    assert _run_cli(folder, checkpoints, tmp_path / "out") == 0
    depth = np.load(tmp_path / "out" / "clip_depth.npz")["depth"]
    assert depth.shape == (5, HEIGHT, WIDTH) and depth.dtype == np.float32
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_depth.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()


def test_cli_on_a_short_video(checkpoints, tmp_path):
    video = tmp_path / "short.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (WIDTH, HEIGHT))
    for frame in _clip(3):
        writer.write(frame)
    writer.release()
    assert _run_cli(video, checkpoints, tmp_path / "out", "--max-frames", "2") == 0
    assert np.load(tmp_path / "out" / "short_depth.npz")["depth"].shape == (2, HEIGHT, WIDTH)
    assert (tmp_path / "out" / "short_depth.mp4").stat().st_size > 0


def test_cli_missing_checkpoint_or_unreadable_input_exits_2(checkpoints, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not a video")
    assert _run_cli(video, (tmp_path / "ppvd.pth", checkpoints[1]), tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "gangweix/Pixel-Perfect-Depth" in err and "yyfz233/Pi3" in err
    assert _run_cli(video, checkpoints, tmp_path / "out") == 2
    assert "not a readable video" in capsys.readouterr().err
    assert _run_cli(video, checkpoints[::-1], tmp_path / "out") == 2  # files swapped: wrong formats
