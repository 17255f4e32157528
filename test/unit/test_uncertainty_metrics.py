"""geometry/uncertainty.py: the spread of decoded samples, what is published, the threshold mask, and the
uncertainty metrics (sparsification, AUSE, Spearman); geometry/alignment.ransac_metric_decoder."""
import numpy as np
import pytest

from pixel_perfect_ros.geometry.alignment import ransac_metric_decoder, recover_metric_depth_ransac
from pixel_perfect_ros.geometry.uncertainty import (
    ause,
    published_uncertainty,
    relative_spread,
    sample_spread,
    sparsification_curve,
    spearman,
    uncertain_mask,
)


def test_the_spread_is_the_standard_deviation_of_the_decoded_samples():
    samples = np.log(np.stack([np.full((2, 3), 2.0), np.full((2, 3), 4.0), np.full((2, 3), 6.0)]))
    spread = sample_spread(np.exp, samples)
    assert spread.dtype == np.float32 and spread.shape == (2, 3)
    np.testing.assert_allclose(spread, np.std([2.0, 4.0, 6.0]), rtol=1e-6)


def test_samples_disagreeing_on_validity_are_infinitely_uncertain_and_all_invalid_is_nan():
    decoded = np.stack([np.array([[1.0, np.nan, np.nan]]), np.array([[2.0, 3.0, np.nan]])])
    spread = sample_spread(lambda n: n, decoded)
    assert spread[0, 0] == pytest.approx(0.5) and spread[0, 1] == np.inf and np.isnan(spread[0, 2])


def test_one_sample_has_no_spread():
    with pytest.raises(ValueError, match="N >= 2"):
        sample_spread(np.exp, np.zeros((1, 2, 2)))


def test_published_uncertainty_is_metres_or_relative_and_nan_exactly_where_depth_is_invalid():
    depth = np.array([[2.0, np.nan, 0.0, 4.0]], np.float32)
    spread = np.array([[0.2, 0.3, 0.1, np.inf]], np.float32)
    metric = published_uncertainty(spread, depth, is_metric=True)
    relative = published_uncertainty(spread, depth, is_metric=False)
    for image in (metric, relative):
        assert image.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(image), ~(np.isfinite(depth) & (depth > 0)))
    assert metric[0, 0] == pytest.approx(0.2) and relative[0, 0] == pytest.approx(0.1)
    assert metric[0, 3] == np.inf and relative[0, 3] == np.inf


def test_the_threshold_mask_is_exactly_the_relative_spread_above_it():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 5.0, (20, 30)).astype(np.float32)
    depth[0, :5] = np.nan
    spread = (depth * rng.uniform(0, 0.2, depth.shape)).astype(np.float32)
    spread[1, 0] = np.inf
    mask = uncertain_mask(spread, depth, 0.1)
    expected = np.isfinite(depth) & (relative_spread(spread, depth) > 0.1)
    np.testing.assert_array_equal(mask, expected)
    assert mask[1, 0] and not mask[0, :5].any() and 0 < mask.sum() < mask.size


def test_a_perfect_ranking_has_zero_ause_a_random_one_does_not():
    rng = np.random.default_rng(1)
    error = rng.exponential(1.0, 5000)
    assert ause(error, error) == pytest.approx(0.0, abs=1e-12)
    assert ause(error, 3 * error + 1) == pytest.approx(0.0, abs=1e-12)  # only the order counts
    assert ause(error, rng.random(5000)) > 0.2
    assert ause(error, -error) > ause(error, rng.random(5000))  # the worst ranking is worse than chance


def test_the_sparsification_curve_falls_for_a_good_ranking_and_starts_at_the_mean():
    rng = np.random.default_rng(2)
    error = rng.exponential(1.0, 1000)
    curve = sparsification_curve(error, error + rng.normal(0, 0.05, 1000), fractions=(0.0, 0.5, 0.9))
    assert curve[0] == pytest.approx(error.mean())
    assert curve[0] > curve[1] > curve[2]
    with_nan = np.append(error, np.nan)
    np.testing.assert_allclose(sparsification_curve(with_nan, np.append(error, 1.0), (0.0,)), [error.mean()])


def test_infinite_uncertainty_ranks_first_and_nan_is_left_out():
    error = np.array([5.0, 1.0, 2.0, 3.0, 9.0])
    uncertainty = np.array([np.inf, 1.0, 2.0, 3.0, np.nan])
    assert ause(error, uncertainty) == pytest.approx(0.0, abs=1e-12)  # inf first: the largest kept error
    np.testing.assert_allclose(sparsification_curve(error, uncertainty, (0.0, 0.25)), [11 / 4, 2.0])
    assert spearman(error, uncertainty) == pytest.approx(1.0)


def test_spearman_is_the_rank_correlation_over_finite_pixels():
    error = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert spearman(error, np.array([10.0, 20.0, 30.0, 40.0, 1.0])) == pytest.approx(1.0)
    assert spearman(error, np.array([4.0, 3.0, 2.0, 1.0, 0.0])) == pytest.approx(-1.0)


def test_the_ransac_decoder_applies_the_official_fit_to_other_samples():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 6.0, (24, 32)).astype(np.float32)
    pred = (np.log1p(gt) - 0.3) / 1.7 + rng.normal(0, 0.01, gt.shape).astype(np.float32)
    mask = np.ones(gt.shape, bool)
    decode = ransac_metric_decoder(pred, gt, mask)
    np.testing.assert_array_equal(decode(pred), recover_metric_depth_ransac(pred, gt, mask))
    other = pred + 0.05
    assert np.all(decode(other) >= decode(pred))  # the same increasing map, not a refit onto gt
