"""Streaming PPVD, mode ``stream_exact`` (inference/video_stream.py), on tiny random models."""
import math

import numpy as np
import pytest
from checkpoint_files import tiny_video_models

from pixel_perfect_ros.inference import video_stream
from pixel_perfect_ros.inference.video_pipeline import PixelPerfectVideoDepth
from pixel_perfect_ros.inference.video_stream import StreamingVideoDepth

HEIGHT, WIDTH = 24, 40


@pytest.fixture(scope="module")
def model():
    return PixelPerfectVideoDepth(*tiny_video_models(), steps=1, seed=0)


def _clip(num_frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, HEIGHT, WIDTH, 3), dtype=np.uint8)


def _stamp(i: int) -> int:
    return 1_000_000_000 + 33_000_000 * i


def _stream(stream: StreamingVideoDepth, frames: np.ndarray, first: int = 0) -> list[tuple[int, np.ndarray]]:
    return [out for i, frame in enumerate(frames, first) for out in stream.push(frame, _stamp(i))]


def _force_fit(monkeypatch, scale: float, at_call: int) -> None:
    """Make the ``at_call``-th fit (0-based) return ``(scale, 0)``; the others are solved as usual."""
    solve, calls = video_stream.scale_and_shift, []

    def fit(prediction, target):
        calls.append(None)
        return (np.float32(scale), np.float32(0)) if len(calls) - 1 == at_call else solve(prediction, target)

    monkeypatch.setattr(video_stream, "scale_and_shift", fit)


@pytest.mark.parametrize("frames_per_window", [1, 4])
def test_every_frame_comes_back_once_in_order_with_its_stamp(model, frames_per_window):
    stream = StreamingVideoDepth(model, frames_per_window=frames_per_window, max_scale_jump=math.inf)
    out, returned = [], []
    for i, frame in enumerate(_clip(11)):
        published = stream.push(frame, _stamp(i))
        out += published
        returned.append(len(published))
    # the 3 filling frames come back one by one, then groups of K
    assert returned == ([1] * 11 if frames_per_window == 1 else [1, 1, 1, 0, 0, 0, 4, 0, 0, 0, 4])
    assert [stamp for stamp, _ in out] == [_stamp(i) for i in range(11)]
    for _, depth in out:
        assert depth.shape == (HEIGHT, WIDTH) and depth.dtype == np.float32 and np.isfinite(depth).all()


def test_cache_fills_then_is_ready(model):
    stream = StreamingVideoDepth(model, max_scale_jump=math.inf)
    states = [stream.cache.state]
    for i, frame in enumerate(_clip(4)):
        stream.push(frame, _stamp(i))
        states.append(stream.cache.state)
    assert states == ["empty", "filling", "filling", "ready", "ready"]


def test_first_frame_is_the_official_one_frame_clip(model):
    frame = _clip(1)
    (_, depth), = StreamingVideoDepth(model).push(frame[0], _stamp(0))
    np.testing.assert_allclose(depth, model(frame).depth[0], rtol=0, atol=1e-6)


def test_every_nth_frame_is_promoted(model):
    stream = StreamingVideoDepth(model, keyframe_every=4, max_scale_jump=math.inf)
    references = []
    for i, frame in enumerate(_clip(11)):
        stream.push(frame, _stamp(i))
        references.append([entry.index for entry in stream.cache.entries])
    assert stream.reanchors == 0
    assert references == [[0], [0, 1], [0, 1, 2], [0, 1, 2], [0, 2, 4], [0, 2, 4], [0, 2, 4], [0, 2, 4],
                          [0, 4, 8], [0, 4, 8], [0, 4, 8]]
    assert [entry.stamp_ns for entry in stream.cache.entries] == [_stamp(0), _stamp(4), _stamp(8)]
    assert all(entry.depth.shape == (64, 64) and entry.image.shape == (3, 64, 64) for entry in stream.cache.entries)


def test_reset_makes_the_next_frame_the_anchor(model):
    stream = StreamingVideoDepth(model, max_scale_jump=math.inf)
    _stream(stream, _clip(5))
    stream.reset()
    assert stream.cache.state == "empty"
    stream.push(_clip(1, seed=1)[0], _stamp(7))
    assert [(entry.index, entry.stamp_ns) for entry in stream.cache.entries] == [(0, _stamp(7))]


@pytest.mark.parametrize("scale, reanchors", [(-0.2, 1), (1.6, 1), (1.4, 0)])
def test_bad_fit_re_anchors_on_the_current_frame(model, monkeypatch, scale, reanchors):
    """Fits 0, 1 are frames 1, 2 (filling); fit 2 is frame 3, the first [3 references + 1] window."""
    _force_fit(monkeypatch, scale, at_call=2)
    stream = StreamingVideoDepth(model, max_scale_jump=0.5)
    out = _stream(stream, _clip(4))
    assert [stamp for stamp, _ in out] == [_stamp(i) for i in range(4)]
    assert all(np.isfinite(depth).all() for _, depth in out)
    assert stream.reanchors == reanchors
    expected = [_stamp(3)] if reanchors else [_stamp(0), _stamp(1), _stamp(2)]
    assert [entry.stamp_ns for entry in stream.cache.entries] == expected


def test_compares_with_the_windowed_mode(model, record_property):
    """Mean |stream_exact - window| on one 16-frame clip, recorded only.

    Both models are random: their agreement says nothing about depth quality, so no threshold is asserted.
    """
    clip = _clip(16)
    streamed = np.stack([depth for _, depth in _stream(StreamingVideoDepth(model, max_scale_jump=math.inf), clip)])
    windowed = model(clip).depth
    difference = float(np.abs(streamed - windowed).mean())
    record_property("mean_abs_difference_to_window_mode", difference)
    print(f"stream_exact vs window, mean |difference| over 16 frames: {difference:.4f}")
    assert streamed.shape == windowed.shape and np.isfinite(difference)


def test_rejects_bad_parameters_and_frames(model):
    for kwargs in (dict(frames_per_window=0), dict(frames_per_window=14), dict(keyframe_every=0),
                   dict(max_scale_jump=0.0)):
        with pytest.raises(ValueError):
            StreamingVideoDepth(model, **kwargs)
    with pytest.raises(ValueError, match="uint8"):
        StreamingVideoDepth(model).push(_clip(1)[0].astype(np.float32), 0)
