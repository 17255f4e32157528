"""PPVD windowing, video resize, channel quirk and cross-window alignment, against the official fixtures."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixel_perfect_ros.inference.video_windows import (
    KEYFRAMES,
    OVERLAP,
    STRIDE,
    WINDOW,
    align_video_depth,
    num_windows,
    padded_length,
    to_network_input,
    window_depth_to_original,
    window_slots,
)

ALIGN_RTOL = 1e-5  # x max|ref|: float32 normal equations; solving them in float64 moves the fixture's out by 6e-7


@pytest.fixture(scope="module")
def windowing(fixtures_dir):
    return json.loads((fixtures_dir / "ppvd_windowing_and_resize.json").read_text())


@pytest.fixture(scope="module")
def align_io(fixtures_dir):
    return torch.load(fixtures_dir / "align_video_depth_io.pt", weights_only=True)


def test_constants_match_official(windowing):
    assert (WINDOW, list(KEYFRAMES), OVERLAP, STRIDE) == (
        windowing["INFER_LEN"], windowing["KEYFRAMES"], windowing["OVERLAP"], windowing["STRIDE"])


def test_slot_tables_match_official(windowing):
    cases = {int(length): case for length, case in windowing["cases"].items()}
    assert len(cases) == 10
    for length, case in cases.items():
        if case["num_windows"] == 0:  # official L <= 3: 3 padded frames, no window, crash; see below
            assert case["padded_len"] < WINDOW
            continue
        assert padded_length(length) == case["padded_len"], length
        assert num_windows(length) == case["num_windows"], length
        assert window_slots(length) == case["window_video_frame_indices"], length


@pytest.mark.parametrize("length", [1, 2, 3])
def test_short_clips_pad_to_one_window(length):
    assert padded_length(length) == WINDOW
    assert window_slots(length) == [[min(i, length - 1) for i in range(WINDOW)]]
    depth = np.random.default_rng(length).random((WINDOW, 4, 5), dtype=np.float32)
    np.testing.assert_array_equal(align_video_depth([depth])[:length], depth[:length])


def test_slot_formula_for_long_clips():
    for length in range(4, 200):
        slots = window_slots(length)
        assert slots[0] == [min(i, length - 1) for i in range(WINDOW)]
        for k in range(1, len(slots)):
            new = [min(STRIDE * k + j, length - 1) for j in range(OVERLAP, WINDOW)]
            prev = [min(STRIDE * (k - 1) + j, length - 1) for j in (8, 15)]
            assert slots[k] == [0, *prev, *new], (length, k)
        assert WINDOW + STRIDE * (len(slots) - 1) >= length


def test_padded_length_rejects_empty_clip():
    with pytest.raises(ValueError):
        padded_length(0)


def test_align_matches_official(align_io):
    windows = [w[:, 0].numpy() for w in align_io["windows"]]  # (16, H, W) each
    out = align_video_depth(windows)
    assert out.dtype == np.float32 and out.shape == tuple(align_io["out"].shape)
    # float32 sums over the reference slots: the summation order (numpy version, SIMD) rounds differently.
    expected = align_io["out"].numpy()
    np.testing.assert_array_equal(out[:WINDOW], expected[:WINDOW])  # window 0 is copied, not solved
    np.testing.assert_allclose(out, expected, rtol=0, atol=ALIGN_RTOL * np.abs(expected).max())


def test_align_keeps_window_zero_and_recovers_known_affine():
    rng = np.random.default_rng(0)
    first = rng.random((WINDOW, 3, 4), dtype=np.float32)
    second = ((first - 0.5) * np.float32(2.0)).astype(np.float32)  # exact inverse: x / 2 + 0.5
    second[0], second[1], second[2] = (first[i] * 2 - 1 for i in KEYFRAMES)
    out = align_video_depth([first, second])
    np.testing.assert_array_equal(out[:WINDOW], first)
    np.testing.assert_allclose(out[WINDOW:], first[OVERLAP:], atol=ALIGN_RTOL)  # values in [0, 1)


def test_align_det_zero_falls_back_to_identity():
    rng = np.random.default_rng(1)
    first = rng.random((WINDOW, 3, 4), dtype=np.float32)
    second = rng.random((WINDOW, 3, 4), dtype=np.float32)
    second[:OVERLAP] = 0.25  # constant reference slots: singular normal equations
    out = align_video_depth([first, second])
    np.testing.assert_array_equal(out[WINDOW:], second[OVERLAP:])


def test_align_rejects_bad_windows():
    with pytest.raises(ValueError):
        align_video_depth([])
    with pytest.raises(ValueError):
        align_video_depth([np.zeros((WINDOW, 2, 2), np.float32), np.zeros((WINDOW, 2, 3), np.float32)])


def test_network_input_channel_quirk_and_resize():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    official = to_network_input(frames)
    rgb = to_network_input(frames, bgr_quirk=False)
    assert official.shape == (2, 3, 512, 512) and official.dtype == torch.float32
    torch.testing.assert_close(official, rgb.flip(1), rtol=0, atol=0)
    expected = F.interpolate(torch.from_numpy((frames[..., ::-1] / 255.0).astype(np.float32)).permute(0, 3, 1, 2),
                             size=(512, 512), mode="bilinear", align_corners=False)
    torch.testing.assert_close(official, expected, rtol=0, atol=0)
    assert 0.0 <= official.min() and official.max() <= 1.0


def test_network_input_rejects_non_video():
    with pytest.raises(ValueError):
        to_network_input(np.zeros((30, 40, 3), np.uint8))


def test_window_depth_back_to_original():
    depth = torch.rand(WINDOW, 1, 512, 512)
    out = window_depth_to_original(depth, 30, 40)
    assert out.shape == (WINDOW, 30, 40) and out.dtype == np.float32
    expected = F.interpolate(depth, size=(30, 40), mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_array_equal(out, expected)
