"""Depth decoders: relative and fixed-range maps, invalid handling, the mode registry."""
import math

import numpy as np
import pytest

from pixel_perfect_ros.geometry.decoding import (
    DECODERS,
    FixedRangeDecoder,
    RelativeDecoder,
    decoder_parameter_names,
    log_affine_to_depth,
    make_decoder,
)


def test_relative_is_exp_positive_and_monotonic():
    n = np.linspace(-5.0, 5.0, 201, dtype=np.float32).reshape(3, 67)
    depth = RelativeDecoder()(n)
    assert depth.dtype == np.float32 and depth.shape == n.shape
    assert np.all(depth > 0)
    assert np.all(np.diff(depth.ravel()) > 0)
    np.testing.assert_allclose(depth, np.exp(n.astype(np.float64)), rtol=1e-6)
    assert RelativeDecoder()(np.zeros((1, 1), np.float32))[0, 0] == 1.0


def test_relative_extreme_values_are_nan_never_zero():
    depth = RelativeDecoder()(np.array([[-200.0, 200.0, 0.0]], np.float32))  # underflow, overflow
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, 1]) and depth[0, 2] == 1.0


@pytest.mark.parametrize("near_m, far_m", [(0.5, 20.0), (0.01, 80.0), (2.0, 3.0)])
def test_fixed_range_inverts_the_training_normalisation(near_m, far_m):
    q2, q98 = math.log1p(near_m), math.log1p(far_m)
    depth = FixedRangeDecoder(near_m, far_m)(np.array([[0.0, 1.0, 0.5]], np.float32))
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth[0], [near_m, far_m, math.exp((q2 + q98) / 2) - 1], rtol=1e-5)


def test_fixed_range_is_monotonic_beyond_the_range_and_nan_below_zero_metres():
    decoder = FixedRangeDecoder(1.0, 10.0)
    n_zero = -math.log(2.0) / math.log(11.0 / 2.0)  # n that maps to 0 m, about -0.41
    n = np.linspace(n_zero + 0.01, 1.5, 101, dtype=np.float32)[None]
    depth = decoder(n)
    assert np.all(depth > 0) and np.all(np.diff(depth[0]) > 0)
    assert np.all(np.isnan(decoder(np.array([[n_zero - 0.01, -1.0, -5.0]], np.float32))))


def test_fixed_range_from_zero_makes_nonpositive_depths_nan():
    depth = FixedRangeDecoder(0.0, 10.0)(np.array([[-0.1, 0.0, 0.5, 1.0]], np.float32))
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, 1])
    np.testing.assert_allclose(depth[0, 2:], [math.sqrt(11.0) - 1, 10.0], rtol=1e-5)


@pytest.mark.parametrize("decoder", [RelativeDecoder(), FixedRangeDecoder(0.5, 20.0)])
def test_non_finite_input_is_nan(decoder):
    depth = decoder(np.array([[np.nan, np.inf, -np.inf, 0.5]], np.float32))
    assert np.all(np.isnan(depth[0, :3])) and np.isfinite(depth[0, 3])


def test_input_must_be_2d():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        RelativeDecoder()(np.zeros((1, 2, 2), np.float32))


def test_log_affine_offset_is_applied_after_exp():
    depth = log_affine_to_depth(np.array([[0.0, 1.0]]), scale=2.0, shift=1.0, offset=2.0)
    np.testing.assert_allclose(depth[0], [math.e - 2, math.exp(3) - 2], rtol=1e-6)


@pytest.mark.parametrize(
    "near_m, far_m, reason",
    [
        (-0.1, 10.0, "near_m must be >= 0"),
        (5.0, 5.0, "far_m must be greater"),
        (10.0, 1.0, "far_m must be greater"),
        (0.5, math.inf, "far_m must be finite"),
        (math.nan, 10.0, "near_m must be finite"),
        ("0.5", 10.0, "near_m must be a number"),
        (0.5, True, "far_m must be a number"),
    ],
)
def test_fixed_range_rejects_invalid_ranges(near_m, far_m, reason):
    with pytest.raises(ValueError, match=reason):
        FixedRangeDecoder(near_m, far_m)


def test_parameters_report_the_map():
    assert RelativeDecoder().parameters() == {"scale": 1.0, "shift": 0.0, "offset": 0.0}
    params = FixedRangeDecoder(0.5, 20.0).parameters()
    assert params == pytest.approx(
        {"near_m": 0.5, "far_m": 20.0, "scale": math.log(21 / 1.5), "shift": math.log(1.5), "offset": 1.0}
    )
    assert all(isinstance(v, float) for v in params.values())


def test_make_decoder_builds_each_mode():
    relative = make_decoder("relative")
    assert isinstance(relative, RelativeDecoder) and relative.mode == "relative" and not relative.is_metric
    fixed = make_decoder("fixed_range", near_m=1, far_m=30)
    assert isinstance(fixed, FixedRangeDecoder) and fixed.mode == "fixed_range" and fixed.is_metric
    assert fixed.parameters()["far_m"] == 30.0
    assert set(DECODERS) == {"relative", "fixed_range"}
    assert decoder_parameter_names("fixed_range") == ("near_m", "far_m")
    assert decoder_parameter_names("relative") == ()


def test_make_decoder_unknown_mode_lists_modes():
    with pytest.raises(ValueError, match=r"unknown depth decoding mode 'metric'.*fixed_range.*relative"):
        make_decoder("metric")


@pytest.mark.parametrize(
    "mode, params",
    [("fixed_range", {"near_m": 0.5}), ("fixed_range", {"near_m": 0.5, "far_m": 9.0, "max_m": 5.0}),
     ("relative", {"near_m": 0.5})],
)
def test_make_decoder_rejects_wrong_parameters(mode, params):
    with pytest.raises(ValueError, match=f"mode '{mode}' takes parameters"):
        make_decoder(mode, **params)


def test_make_decoder_rejects_invalid_values():
    with pytest.raises(ValueError, match="far_m must be greater"):
        make_decoder("fixed_range", near_m=3.0, far_m=1.0)
