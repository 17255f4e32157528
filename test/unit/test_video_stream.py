"""Streaming PPVD, modes ``stream_exact`` and ``stream_cached`` (inference/video_stream.py), on tiny random models."""
import copy
import math

import numpy as np
import pytest
import torch
from checkpoint_files import tiny_video_models

from pixel_perfect_ros.inference import video_stream
from pixel_perfect_ros.inference.video_pipeline import PixelPerfectVideoDepth
from pixel_perfect_ros.inference.video_stream import MODES, STAGES, StreamingVideoDepth

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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("frames_per_window", [1, 4])
def test_every_frame_comes_back_once_in_order_with_its_stamp(model, frames_per_window, mode):
    stream = StreamingVideoDepth(model, frames_per_window=frames_per_window, max_scale_jump=math.inf, mode=mode)
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


@pytest.mark.parametrize("mode", MODES)
def test_flush_runs_the_incomplete_group_as_a_smaller_window(model, mode):
    clip = _clip(5)  # 3 filling the cache, then 2 of a group of 4
    stream = StreamingVideoDepth(model, frames_per_window=4, max_scale_jump=math.inf, mode=mode)
    assert [stamp for stamp, _ in _stream(stream, clip)] == [_stamp(i) for i in range(3)]
    flushed = stream.flush()
    assert [stamp for stamp, _ in flushed] == [_stamp(3), _stamp(4)] and stream.pending == []
    assert stream.flush() == [] and stream.timings_ms["sampling"] == 0.0
    # the same window as a stream whose groups are of 2
    expected = _stream(StreamingVideoDepth(model, frames_per_window=2, max_scale_jump=math.inf, mode=mode), clip)[3:]
    for (_, depth), (_, want) in zip(flushed, expected, strict=True):
        np.testing.assert_allclose(depth, want, rtol=1e-5, atol=1e-6)


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
                   dict(max_scale_jump=0.0), dict(mode="cached")):
        with pytest.raises(ValueError):
            StreamingVideoDepth(model, **kwargs)
    with pytest.raises(ValueError, match="uint8"):
        StreamingVideoDepth(model).push(_clip(1)[0].astype(np.float32), 0)


# ------------------------------------------------------------------------------------------------
# stream_cached
# ------------------------------------------------------------------------------------------------

def _frame_local(model: PixelPerfectVideoDepth, steps: int) -> PixelPerfectVideoDepth:
    """A copy of ``model`` whose frames interact only through the pooled reference tokens: identity
    temporal blocks (zero adaLN) and identity Pi3 global decoder blocks (zero LayerScale)."""
    dit, pi3 = copy.deepcopy(model.dit), copy.deepcopy(model.semantics)
    with torch.no_grad():
        for block in dit.temporal_blocks:
            block.adaLN_modulation[-1].weight.zero_()
            block.adaLN_modulation[-1].bias.zero_()
        for block in pi3.decoder[1::2]:
            block.ls1.gamma.zero_()
            block.ls2.gamma.zero_()
    return PixelPerfectVideoDepth(dit, pi3, steps=steps, seed=0)


@pytest.fixture
def dit_batches(model):
    """Frames per DiT call, recorded through the patch embedding every forward variant starts with."""
    batches = []
    handle = model.dit.x_embedder.register_forward_hook(lambda module, args, out: batches.append(len(args[0])))
    yield batches
    handle.remove()


def test_cached_dit_batch_is_the_new_frames_only(model, dit_batches):
    stream = StreamingVideoDepth(model, frames_per_window=4, max_scale_jump=math.inf, mode="stream_cached")
    _stream(stream, _clip(11))
    # 3 filling windows of 16 slots, the reference pass (3 references), then two groups of K = 4
    assert dit_batches == [16, 16, 16, 3, 4, 4]
    assert stream.reference_passes == 1


def test_reference_pass_runs_only_when_the_references_change(model):
    stream = StreamingVideoDepth(model, keyframe_every=4, max_scale_jump=math.inf, mode="stream_cached")
    passes, cached = [], []
    for i, frame in enumerate(_clip(11)):
        stream.push(frame, _stamp(i))
        passes.append(stream.reference_passes)
        cached.append(stream.references is not None)
    # ready after frame 2; frames 4 and 8 are promoted, so frames 3, 5, 9 need a new reference pass
    assert passes == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3]
    assert cached == [False, False, False, True, False, True, True, True, False, True, True]
    assert all(entry.tokens is not None for entry in stream.cache.entries)


def test_a_change_of_steps_runs_a_new_reference_pass():
    """The recorded tokens are per Euler step: other steps (the node's run-time parameter) need a new pass."""
    model = PixelPerfectVideoDepth(*tiny_video_models(), steps=1, seed=0)
    stream = StreamingVideoDepth(model, keyframe_every=100, max_scale_jump=math.inf, mode="stream_cached")
    _stream(stream, _clip(5))
    assert stream.reference_passes == 1
    model.steps = 2
    out = _stream(stream, _clip(2, seed=1), first=5)
    assert stream.reference_passes == 2 and len(stream.references.steps) == 2
    assert [stamp for stamp, _ in out] == [_stamp(5), _stamp(6)]


@pytest.mark.parametrize("frames_per_window", [1, 4])
def test_cached_equals_exact_when_the_frames_do_not_interact(model, frames_per_window):
    """With identity temporal blocks and Pi3 global blocks the references do not depend on the new frames,
    so the approximation of stream_cached vanishes: both modes give the same depth, over 2 Euler steps."""
    local = _frame_local(model, steps=2)
    clip = _clip(11)
    out = {mode: _stream(StreamingVideoDepth(local, frames_per_window=frames_per_window, keyframe_every=4,
                                             max_scale_jump=math.inf, mode=mode), clip) for mode in MODES}
    assert [s for s, _ in out["stream_cached"]] == [s for s, _ in out["stream_exact"]] == [_stamp(i) for i in range(11)]
    for (_, cached), (_, exact) in zip(out["stream_cached"], out["stream_exact"]):
        np.testing.assert_allclose(cached, exact, rtol=0, atol=1e-5)


def test_cached_differs_from_exact_with_temporal_blocks(model):
    """The random temporal blocks mix frames: the approximation is visible (it is not a no-op)."""
    clip = _clip(5)
    out = {mode: _stream(StreamingVideoDepth(model, max_scale_jump=math.inf, mode=mode), clip) for mode in MODES}
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(out["stream_cached"][:3], out["stream_exact"][:3]))
    assert np.abs(out["stream_cached"][3][1] - out["stream_exact"][3][1]).max() > 1e-6


def test_pi3_split_and_cached_encoder_tokens(model):
    pi3 = model.semantics
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = pi3.forward_semantics(images)
        assert torch.equal(pi3.semantics_from_tokens(pi3.encode(images), 4, 4), whole)
        # per-frame encoder: references encoded on their own, the new frames on theirs
        tokens = torch.cat([pi3.encode(images[:3]), pi3.encode(images[3:])])
        torch.testing.assert_close(pi3.semantics_from_tokens(tokens, 4, 4)[3:], whole[3:], rtol=0, atol=1e-5)


def test_reset_and_reanchor_clear_the_reference_pass(model, monkeypatch):
    stream = StreamingVideoDepth(model, max_scale_jump=math.inf, mode="stream_cached")
    _stream(stream, _clip(4))
    assert stream.references is not None
    stream.reset()
    assert stream.references is None and stream.cache.state == "empty"

    _force_fit(monkeypatch, -0.2, at_call=2)  # fits 0, 1: filling frames 1, 2; fit 2: the reference pass
    stream = StreamingVideoDepth(model, max_scale_jump=0.5, mode="stream_cached")
    out = _stream(stream, _clip(4))
    assert [stamp for stamp, _ in out] == [_stamp(i) for i in range(4)]
    assert stream.reanchors == 1 and stream.references is None and stream.reference_passes == 1
    assert [entry.stamp_ns for entry in stream.cache.entries] == [_stamp(3)]


@pytest.mark.parametrize("mode", MODES)
def test_timings_cover_the_last_push(model, mode):
    stream = StreamingVideoDepth(model, frames_per_window=2, max_scale_jump=math.inf, mode=mode)
    for i, frame in enumerate(_clip(5)):
        published = stream.push(frame, _stamp(i))
        assert tuple(stream.timings_ms) == STAGES
        assert all(isinstance(v, float) and v >= 0 for v in stream.timings_ms.values())
        busy = [stage for stage, ms in stream.timings_ms.items() if ms > 0]
        assert busy == (list(STAGES) if published else ["preprocess"])
