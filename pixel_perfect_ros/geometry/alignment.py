"""Alignment of relative depth predictions to metric depth (pure numpy + scikit-learn).

Two protocols:

* **log-affine RANSAC** (PPD's official one, ``ppd/utils/align_depth_func.py``): PPD predicts an
  affine-invariant normalised log depth ``n`` with ``log(1 + d) = a * n + b`` per image. ``a, b`` are
  fitted robustly against a metric reference (MoGe-2 depth at run time, GT in evaluation) and the
  metric depth is ``exp(a * n + b) - 1``.
* **least squares in disparity** (the video-depth papers' protocol, e.g. Video Depth Anything):
  one scale and shift of the predicted disparity ``1 / pred`` to the reference disparity ``1 / gt``.

Every random choice uses an explicit seeded generator; numpy's global RNG is never touched.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import RANSACRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

RANSAC_MAX_TRIALS = 1000
"""Official ``RANSACRegressor(max_trials=1000)``."""
METRIC_DEPTH_MIN_M = 1e-3
"""Lower clip of the official metric recovery, metres."""


@dataclass(frozen=True)
class LogAffineFit:
    """Result of :func:`fit_log_affine_ransac`: ``log(gt + 1) ~= a * pred + b``.

    Attributes:
        a: slope (float). ``1.0`` when the fit failed (``fallback``).
        b: intercept, log(metres + 1) units. ``0.0`` when the fit failed.
        inliers: (N,) bool over the masked pixels in row-major order (``pred[mask]``), True = RANSAC
            inlier. All False when the fit failed.
        n_trials: RANSAC trials run (sklearn's ``n_trials_``); 0 when the fit failed before any.
        fallback: True when the fit raised and the official ``a = 1, b = 0`` fallback was used.
    """

    a: float
    b: float
    inliers: np.ndarray
    n_trials: int
    fallback: bool


def fit_log_affine_ransac(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    seed: int = 0,
    max_trials: int = RANSAC_MAX_TRIALS,
) -> LogAffineFit:
    """Official robust fit of ``y = log(gt + 1)`` against ``x = pred`` on the masked pixels.

    Exactly PPD's ``recover_metric_depth_ransac`` fit: ``x = pred[mask]`` and ``y = log(gt[mask] + 1)``
    in float32, a degree-1 ``PolynomialFeatures(include_bias=False)`` + ``RANSACRegressor`` pipeline
    (defaults: ``LinearRegression``, ``min_samples = 2``, MAD residual threshold, absolute-error
    loss, final least-squares refit on the inliers). The only difference is the RNG: a fresh
    ``np.random.RandomState(seed)`` instead of numpy's global one. ``np.random.seed(666)`` seeds the
    global RNG with the same Mersenne Twister stream, so ``seed=666`` reproduces the official first
    call after ``set_seed(666)`` bit-exactly.

    As in the official code, any exception during the fit (fewer than 2 pixels, no consensus set,
    degenerate data) gives ``a = 1, b = 0`` (here flagged by ``fallback=True``; the official code
    catches everything with a bare ``except``, this catches ``Exception``).

    Args:
        pred: (H, W) float, PPD normalised log depth ``n`` (unitless, any range).
        gt: (H, W) float, metric reference depth, metres (> -1 where masked).
        mask: (H, W) bool, pixels used for the fit.
        seed: seed of the ``RandomState`` driving RANSAC's sampling.
        max_trials: RANSAC's trial cap (official 1000).

    Returns:
        The fit; ``inliers`` index ``pred[mask]``.

    Raises:
        ValueError: shapes differ or mask is not boolean.
    """
    _check_same_shape(pred, gt, mask)
    x = pred[mask].astype(np.float32)  # (N,)
    y = np.log(gt[mask].astype(np.float32) + 1.0)  # (N,) float32, log(m + 1)
    model = make_pipeline(
        PolynomialFeatures(degree=1, include_bias=False),
        RANSACRegressor(max_trials=max_trials, random_state=np.random.RandomState(seed)),
    )
    try:
        # 2-D y as the official call (the loss then sums over the single output column).
        model.fit(x[:, None], y[:, None])
    except Exception:  # noqa: BLE001 - the official fallback catches every failure
        return LogAffineFit(a=1.0, b=0.0, inliers=np.zeros(x.shape[0], dtype=bool), n_trials=0, fallback=True)
    ransac = model.named_steps["ransacregressor"]
    return LogAffineFit(
        a=ransac.estimator_.coef_.item(),
        b=ransac.estimator_.intercept_.item(),
        inliers=np.asarray(ransac.inlier_mask_, dtype=bool),
        n_trials=int(ransac.n_trials_),
        fallback=False,
    )


def recover_metric_depth_ransac(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """PPD's official ``recover_metric_depth_ransac``: metric depth from normalised log depth.

    1. ``a, b`` from :func:`fit_log_affine_ransac` (seeded; ``seed=666`` = official first call).
    2. If ``a > 0``: ``m = a * pred + b``; else the official fallback ``m = pred * mean(y) / mean(x)``
       (means of ``log(gt[mask] + 1)`` and ``pred[mask]``).
    3. ``clip(exp(m) - 1, 1e-3, max(gt[mask]))`` on the whole image, float32 arithmetic throughout.

    Args:
        pred: (H, W) float, PPD normalised log depth ``n``.
        gt: (H, W) float, metric reference depth, metres (MoGe-2 depth, or GT in evaluation).
        mask: (H, W) bool, valid reference pixels; at least one.
        seed: RANSAC seed.

    Returns:
        (H, W) float32 metric depth, metres, every pixel in ``[1e-3, max(gt[mask])]`` (NaN where
        ``pred`` is NaN).

    Raises:
        ValueError: shapes differ, mask not boolean, or the mask is empty (the official code fails
            there too, on ``max`` of an empty array).
    """
    return ransac_metric_decoder(pred, gt, mask, seed)(pred)


def ransac_metric_decoder(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray,
                          seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """The decoding ``recover_metric_depth_ransac`` fits on ``pred`` (same arguments), as a function
    that applies it to any normalised log depth of the image (e.g. other samples of the same frame):
    (H, W) -> (H, W) float32 metres in ``[1e-3, max(gt[mask])]``."""
    _check_same_shape(pred, gt, mask)
    if not mask.any():
        raise ValueError("mask selects no pixel; metric recovery needs at least one reference depth")
    pred32 = pred.astype(np.float32)
    gt_masked = gt[mask].astype(np.float32)  # (N,) metres
    fit = fit_log_affine_ransac(pred, gt, mask, seed=seed)
    if fit.a > 0:
        scale, shift = fit.a, fit.b  # Python floats (weak scalars): the arithmetic stays float32
    else:
        x_mean = np.mean(pred32[mask])
        y_mean = np.mean(np.log(gt_masked + 1.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # x_mean == 0 -> inf, as official
            scale, shift = y_mean / x_mean, None
    max_depth = np.max(gt_masked)

    def decode(n: np.ndarray) -> np.ndarray:
        n32 = n.astype(np.float32)
        log_depth = n32 * scale if shift is None else scale * n32 + shift
        with np.errstate(over="ignore"):  # exp overflow -> inf, clipped to max(gt) below
            depth = np.exp(log_depth) - 1.0
        return np.clip(depth, METRIC_DEPTH_MIN_M, max_depth)

    return decode


def fit_scale_shift(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Closed-form least squares ``min_{s,t} sum (s * x + t - y)^2`` in float64.

    ``s = cov(x, y) / var(x)``, ``t = mean(y) - s * mean(x)`` over the pixels where ``mask`` is True
    and both ``x`` and ``y`` are finite.

    Args:
        x: any shape, float, the quantity to align.
        y: same shape as ``x``, float, the target.
        mask: same shape, bool, or None for all finite pairs.

    Returns:
        ``(s, t)`` as Python floats.

    Raises:
        ValueError: shapes differ, fewer than 2 valid pairs, or ``x`` constant over them (the
            problem then has no unique solution).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape != y.shape or (mask is not None and np.shape(mask) != x.shape):
        raise ValueError(f"x, y (and mask) must have one shape, got {x.shape}, {y.shape}, "
                         f"{None if mask is None else np.shape(mask)}")
    valid = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    xv = x[valid].astype(np.float64)
    yv = y[valid].astype(np.float64)
    if xv.size < 2:
        raise ValueError(f"need at least 2 valid pairs for a scale and shift, got {xv.size}")
    x_mean, y_mean = xv.mean(), yv.mean()
    xc = xv - x_mean
    var = float(np.dot(xc, xc))
    if var == 0.0:
        raise ValueError("x is constant on the valid pixels; scale and shift are not determined")
    s = float(np.dot(xc, yv - y_mean)) / var
    return s, float(y_mean - s * x_mean)


def align_disparity_lsq(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares scale/shift alignment in disparity space, returned as depth.

    The video-depth protocol (Video Depth Anything, DepthCrafter): ``s, t`` minimise
    ``sum (s / pred + t - 1 / gt)^2`` over ``mask`` pixels where both depths are finite and > 0;
    the aligned depth is ``1 / (s / pred + t)``. Works on any shape, so passing a stacked clip
    ``(T, H, W)`` gives VDA's one scale/shift per clip. Unlike VDA's script (which clips the aligned
    disparity to >= 1e-3 and the depth to the dataset's maximum) a non-positive aligned disparity
    gives NaN here, so callers see it rather than a clipped far value.

    Args:
        pred_depth: any shape, float, positive relative depth (``1 / pred`` is the disparity; up to
            scale and shift in disparity). Non-finite or <= 0 = invalid.
        gt_depth: same shape, float, metric depth, metres; non-finite or <= 0 = invalid.
        mask: same shape, bool, pixels used for the fit.

    Returns:
        Same shape as ``pred_depth``, its float dtype (float32 at least), metres; NaN where
        ``pred_depth`` is invalid or the aligned disparity is <= 0.

    Raises:
        ValueError: shapes differ, fewer than 2 valid pixels, or constant predicted disparity.
    """
    _check_same_shape(pred_depth, gt_depth, mask)
    out_dtype = np.result_type(pred_depth.dtype, np.float32)
    pred64 = pred_depth.astype(np.float64)
    gt64 = gt_depth.astype(np.float64)
    pred_ok = np.isfinite(pred64) & (pred64 > 0)
    gt_ok = np.isfinite(gt64) & (gt64 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pred_disp = np.where(pred_ok, 1.0 / pred64, np.nan)
        gt_disp = np.where(gt_ok, 1.0 / gt64, np.nan)
    s, t = fit_scale_shift(pred_disp, gt_disp, mask)
    aligned_disp = s * pred_disp + t  # NaN where pred invalid
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(aligned_disp > 0, 1.0 / aligned_disp, np.nan)
    return depth.astype(out_dtype)


def _check_same_shape(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> None:
    """Raise ValueError unless ``pred``, ``gt`` and ``mask`` share one shape and ``mask`` is bool."""
    if pred.shape != gt.shape or pred.shape != mask.shape:
        raise ValueError(f"pred, gt and mask must have one shape, got {pred.shape}, {gt.shape}, {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array, got dtype {mask.dtype}")
