"""Per-pixel depth uncertainty from several diffusion samples of one frame, and how well it ranks errors.

PPD draws its depth from noise: samples from different initial noises agree where the image determines
the depth and spread where it does not. With ``N`` samples (each decoded as the published depth is):

- ``sample_spread``: the standard deviation over the samples of the decoded depth (population, ddof 0),
  per pixel: metres for a metric decoder, relative units otherwise;
- ``relative_spread``: that spread divided by the published depth (unitless): what the threshold and the
  relative-mode topic use, because relative depth has no unit to state a spread in;
- ``published_uncertainty``: metres in metric modes, the relative spread in relative mode; NaN exactly
  where the published depth is invalid.

Uncertainty metrics (against the absolute error of each pixel):

- ``sparsification_curve``: the mean error of the pixels kept after removing the given fractions, most
  uncertain first; ``ause``: the area between it and the oracle's curve (removing by the error itself),
  0 for a perfect ranking (Ilg et al. 2018, the usual uncertainty metric of depth and flow);
- ``spearman``: the rank correlation of uncertainty and error.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

SPARSIFICATION_FRACTIONS = tuple(np.round(np.arange(0.0, 1.0, 0.05), 2))
"""Fractions of pixels removed along a sparsification curve: 0, 0.05, ..., 0.95."""


def sample_spread(decode: Callable[[np.ndarray], np.ndarray], samples: np.ndarray) -> np.ndarray:
    """(h, w) float32 standard deviation over the samples of ``decode(sample)``; +inf where some decoded
    samples are invalid (NaN) and others not (the samples disagree on whether there is depth), NaN where
    all are.

    Args:
        decode: normalised log-depth (h, w) -> depth (h, w), NaN = invalid (a ``DepthDecoder``, unchanged).
        samples: (N, h, w) normalised log-depth samples of one frame, N >= 2.
    """
    if samples.ndim != 3 or len(samples) < 2:
        raise ValueError(f"samples must be (N >= 2, h, w), got shape {samples.shape}")
    decoded = np.stack([decode(sample) for sample in samples])
    invalid = np.isnan(decoded)
    spread = np.where(invalid.any(axis=0), np.inf, np.nan_to_num(decoded).std(axis=0))
    return np.where(invalid.all(axis=0), np.nan, spread).astype(np.float32)


def relative_spread(spread: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``spread / depth`` (unitless), NaN where ``depth`` is not finite and positive."""
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, spread / np.where(valid, depth, 1), np.nan).astype(np.float32)


def published_uncertainty(spread: np.ndarray, depth: np.ndarray, is_metric: bool) -> np.ndarray:
    """The uncertainty image beside ``depth`` (h, w): ``spread`` in metres when ``is_metric``, else the
    relative spread; NaN exactly where ``depth`` is invalid (not finite and positive)."""
    valid = np.isfinite(depth) & (depth > 0)
    values = spread if is_metric else relative_spread(spread, depth)
    return np.where(valid, values, np.nan).astype(np.float32)


def uncertain_mask(spread: np.ndarray, depth: np.ndarray, threshold: float) -> np.ndarray:
    """(h, w) bool: pixels of valid depth whose relative spread exceeds ``threshold`` (> 0)."""
    return relative_spread(spread, depth) > threshold  # NaN (invalid depth) compares False


def _ranked_errors(error: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Errors of the pixels with a finite error and a score (not NaN), ordered from the highest ``score``
    to the lowest (+inf first)."""
    keep = np.isfinite(error) & ~np.isnan(score)
    if not keep.any():
        raise ValueError("no pixel has both a finite error and an uncertainty")
    error, score = error[keep].astype(np.float64), score[keep].astype(np.float64)
    return error[np.argsort(-score, kind="stable")]


def sparsification_curve(error: np.ndarray, uncertainty: np.ndarray,
                         fractions: Sequence[float] = SPARSIFICATION_FRACTIONS) -> np.ndarray:
    """Mean ``error`` of the pixels left after removing each fraction of them, the most ``uncertain``
    first (+inf: samples that disagree on validity, the most uncertain): (len(fractions),) float64. Pixels
    without a finite error or without an uncertainty (NaN) are left out."""
    ranked = _ranked_errors(np.asarray(error), np.asarray(uncertainty))
    suffix_mean = np.cumsum(ranked[::-1])[::-1] / np.arange(len(ranked), 0, -1)  # mean of ranked[i:]
    starts = np.minimum((np.asarray(fractions) * len(ranked)).astype(int), len(ranked) - 1)
    return suffix_mean[starts]


def ause(error: np.ndarray, uncertainty: np.ndarray, fractions: Sequence[float] = SPARSIFICATION_FRACTIONS) -> float:
    """Area between the sparsification curve of ``uncertainty`` and the oracle's (``error`` itself),
    mean over ``fractions``: 0 for a ranking as good as the error's own, larger is worse."""
    curve = sparsification_curve(error, uncertainty, fractions)
    oracle = sparsification_curve(error, np.where(np.isnan(uncertainty), np.nan, error), fractions)
    return float(np.mean(curve - oracle))


def spearman(error: np.ndarray, uncertainty: np.ndarray) -> float:
    """Spearman rank correlation of ``uncertainty`` (+inf ranking highest) and ``error`` over the pixels
    with a finite error and an uncertainty (not NaN)."""
    keep = np.isfinite(error) & ~np.isnan(uncertainty)
    if keep.sum() < 3:
        raise ValueError("need at least 3 pixels with a finite error and an uncertainty")
    return float(spearmanr(uncertainty[keep], error[keep]).statistic)
