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
    assert set(DECODERS) == {"relative", "fixed_range", "moge2", "sparse_topic"}
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


# ----------------------------------------------------------------------------- reference-aligned decoders


def _scene(a=0.8, b=0.4, shape=(48, 64)):
    """Normalised depth n (a ramp) and the metric depth whose log(1+d) is a*n + b."""
    n = np.tile(np.linspace(-0.2, 1.2, shape[1], dtype=np.float32), (shape[0], 1))
    return n, np.expm1(a * n + b).astype(np.float32)


def test_sample_reference_keeps_every_sparse_point_at_any_resolution():
    from pixel_perfect_ros.geometry.decoding import sample_reference

    n = np.arange(12, dtype=np.float32).reshape(3, 4)
    reference = np.full((6, 8), np.nan, np.float32)
    reference[0, 0], reference[5, 7], reference[2, 3] = 1.0, 2.0, 3.0
    reference[4, 4] = 0.0  # 16UC1-style invalid
    x, y = sample_reference(n, reference)
    assert sorted(zip(x.tolist(), y.tolist())) == [(0.0, 1.0), (5.0, 3.0), (11.0, 2.0)]


def test_moge2_decoder_equals_the_official_metric_recovery():
    from pixel_perfect_ros.geometry.alignment import recover_metric_depth_ransac

    n, metric = _scene()
    rng = np.random.default_rng(0)
    noisy = metric * rng.uniform(0.97, 1.03, metric.shape).astype(np.float32)
    decoder = make_decoder("moge2", moge2_min_points=10)
    assert decoder.update(n, noisy) == "fitted" and decoder.is_metric
    official = recover_metric_depth_ransac(n, noisy, np.ones(n.shape, bool), seed=0)
    np.testing.assert_allclose(decoder(n), official, rtol=2e-6)


def test_sparse_decoder_falls_back_fits_holds_and_rejects_outliers():
    n, metric = _scene()
    decoder = make_decoder("sparse_topic", sparse_min_points=20, sparse_smoothing=0.5, sparse_max_jump=0.3)
    assert not decoder.is_metric and decoder.state == "relative_fallback"
    np.testing.assert_allclose(decoder(n), np.exp(n), rtol=1e-6)  # relative until the first fit

    sparse = np.full_like(metric, np.nan)
    sparse[::4, ::4] = metric[::4, ::4]  # 192 points
    sparse[::8, ::8] *= 3.0  # 25 % gross outliers
    assert decoder.update(n, sparse) == "fitted" and decoder.is_metric
    np.testing.assert_allclose(decoder(n), metric, rtol=1e-3)

    assert decoder.update(n, np.full((4, 4), np.nan, np.float32)) == "held"
    np.testing.assert_allclose(decoder(n), metric, rtol=1e-3)

    far = np.expm1(0.8 * n + 1.4).astype(np.float32)  # e-fold jump: an outlier fit
    for _ in range(decoder.MAX_REJECTIONS):
        assert decoder.update(n, far) == "outlier_rejected"
    np.testing.assert_allclose(decoder(n), metric, rtol=1e-3)
    assert decoder.update(n, far) == "fitted"  # persistent: the scene changed
    np.testing.assert_allclose(decoder(n), far, rtol=1e-3)


def test_sparse_decoder_smooths_small_changes():
    n, metric = _scene(b=0.4)
    decoder = make_decoder("sparse_topic", sparse_min_points=20, sparse_smoothing=0.5, sparse_max_jump=0.3)
    decoder.update(n, metric)
    _, nearer = _scene(b=0.3)
    assert decoder.update(n, nearer) == "smoothed"
    assert decoder.scale == pytest.approx(0.8, abs=1e-4) and decoder.shift == pytest.approx(0.35, abs=1e-4)


def test_one_rejected_outlier_does_not_turn_off_smoothing_of_the_next_good_fit():
    n, metric = _scene(b=0.4)
    decoder = make_decoder("sparse_topic", sparse_min_points=20, sparse_smoothing=0.5, sparse_max_jump=0.3)
    decoder.update(n, metric)
    assert decoder.update(n, np.expm1(0.8 * n + 1.4).astype(np.float32)) == "outlier_rejected"
    _, nearer = _scene(b=0.3)
    assert decoder.update(n, nearer) == "smoothed"  # the average of the last accepted fit and this one
    assert decoder.scale == pytest.approx(0.8, abs=1e-4) and decoder.shift == pytest.approx(0.35, abs=1e-4)
    assert decoder.update(n, nearer) == "smoothed"  # and the rejection count was cleared by accepting


@pytest.mark.parametrize("params", [dict(sparse_min_points=1, sparse_smoothing=0.5, sparse_max_jump=0.3),
                                    dict(sparse_min_points=20, sparse_smoothing=1.0, sparse_max_jump=0.3),
                                    dict(sparse_min_points=20, sparse_smoothing=0.5, sparse_max_jump=0.0)])
def test_sparse_decoder_rejects_bad_parameters(params):
    with pytest.raises(ValueError):
        make_decoder("sparse_topic", **params)
