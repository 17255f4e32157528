"""Depth evaluation metrics (pure numpy, scipy, OpenCV; no ROS imports).

* :func:`depth_metrics`: PPD's official AbsRel and delta accuracies on aligned depth.
* :func:`aligned_metrics`: the same after one of the alignment protocols (official log-affine
  RANSAC, video-depth least squares in disparity, or none for metric depth).
* :func:`edge_aware_chamfer`: the paper's flying-pixel metric, chamfer distance of the 3D points in a
  band around the GT depth edges.
* :func:`temporal_alignment_error`: Video Depth Anything's TAE (depth warped with GT poses).
* :func:`flicker`, :func:`cut_recovery`: a clip's frame-to-frame jitter where the truth is static, and the
  frames an error takes to settle after a scene cut.
"""
from __future__ import annotations

from typing import Literal, Sequence

import cv2
import numpy as np
from scipy.spatial import cKDTree

from .alignment import _check_same_shape, align_disparity_lsq, recover_metric_depth_ransac
from .projection import back_project

GT_MIN_DEPTH_M = 1e-3
"""Official evaluation mask: ``gt > 1e-3``."""
EPS = 1e-5
"""Official epsilon in the ratio and AbsRel denominators."""
DELTA_BASE = 1.25
"""delta_k = fraction of pixels with ``max(gt/pred, pred/gt) < 1.25**k``."""
DELTA_KEYS = {"delta_0_5": 0.5, "delta_1": 1.0, "delta_2": 2.0, "delta_3": 3.0}
"""Metric name -> exponent ``k``."""

Protocol = Literal["ransac_log", "lsq_disparity", "none"]
EdgeScale = Literal["linear", "log"]


# --------------------------------------------------------------------------------------------------
# Per-image depth metrics
# --------------------------------------------------------------------------------------------------

def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PPD's official metrics (``depth_estimation_model.py``) on an already aligned prediction.

    Evaluation pixels: ``gt > 1e-3`` AND ``mask`` AND ``pred`` finite. On them
    ``thresh = max(gt / (pred + 1e-5), pred / (gt + 1e-5))``, ``delta_k = mean(thresh < 1.25**k)``
    for ``k`` in 0.5, 1, 2, 3, and ``abs_rel = mean(|gt - pred| / (gt + 1e-5))``. Computed in float64.
    The official code never sees a non-finite prediction; here such pixels (e.g. NaN from
    :func:`align_disparity_lsq`) are left out and reported through ``valid_frac``.

    Args:
        pred: (H, W) float, aligned predicted depth, metres; non-finite = no prediction.
        gt: (H, W) float, ground-truth depth, metres.
        mask: (H, W) bool, the dataset's valid mask.

    Returns:
        ``{"abs_rel", "delta_0_5", "delta_1", "delta_2", "delta_3"}`` as fractions (not percent),
        ``"n_pixels"`` (evaluated pixel count) and ``"valid_frac"`` (finite predictions over the
        pixels with valid GT; 1.0 for an official-style prediction). Metrics are NaN when no pixel
        is evaluated.

    Raises:
        ValueError: shapes differ or mask is not boolean.
    """
    _check_same_shape(pred, gt, mask)
    gt_ok = mask & (gt > GT_MIN_DEPTH_M)  # NaN GT compares False -> excluded
    pred_ok = np.isfinite(pred)
    valid = gt_ok & pred_ok
    n_gt = int(gt_ok.sum())
    n = int(valid.sum())
    out = {"n_pixels": float(n), "valid_frac": n / n_gt if n_gt else float("nan")}
    if n == 0:
        out.update({"abs_rel": float("nan"), **{key: float("nan") for key in DELTA_KEYS}})
        return out
    p = pred[valid].astype(np.float64)  # (n,)
    g = gt[valid].astype(np.float64)  # (n,)
    thresh = np.maximum(g / (p + EPS), p / (g + EPS))
    out["abs_rel"] = float(np.mean(np.abs(g - p) / (g + EPS)))
    for key, k in DELTA_KEYS.items():
        out[key] = float(np.mean(thresh < DELTA_BASE ** k))
    return out


def aligned_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    protocol: Protocol = "ransac_log",
    seed: int = 0,
) -> dict[str, float]:
    """Align a prediction to the GT with one protocol, then :func:`depth_metrics`.

    The prediction's meaning depends on the protocol:

    * ``"ransac_log"`` (PPD's official evaluation): ``pred`` is PPD's normalised log depth ``n``
      (unitless). Evaluation mask ``gt > 1e-3 & mask``, then :func:`recover_metric_depth_ransac`
      (RANSAC seeded with ``seed``; the official run uses numpy's global RNG after
      ``seed_everything(666)``), clipped to ``[1e-3, max gt]``.
    * ``"lsq_disparity"`` (video-depth papers): ``pred`` is a positive relative depth; one
      least-squares scale/shift of ``1 / pred`` to ``1 / gt`` (:func:`align_disparity_lsq`). Pixels
      whose aligned disparity is <= 0 become NaN and lower ``valid_frac``.
    * ``"none"``: ``pred`` is already metric depth, metres.

    Args:
        pred: (H, W) float, see above.
        gt: (H, W) float, ground-truth depth, metres.
        mask: (H, W) bool, the dataset's valid mask.
        protocol: ``"ransac_log" | "lsq_disparity" | "none"``.
        seed: RANSAC seed (``"ransac_log"`` only).

    Returns:
        The :func:`depth_metrics` dict.

    Raises:
        ValueError: unknown protocol, shapes differ, or the alignment has too few valid pixels.
    """
    _check_same_shape(pred, gt, mask)
    eval_mask = mask & (gt > GT_MIN_DEPTH_M)
    if protocol == "ransac_log":
        # The fit sees only finite predictions (e.g. NaN where a flying-pixel filter removed a pixel).
        aligned = recover_metric_depth_ransac(pred, gt, eval_mask & np.isfinite(pred), seed=seed)
    elif protocol == "lsq_disparity":
        aligned = align_disparity_lsq(pred, gt, eval_mask)
    elif protocol == "none":
        aligned = pred
    else:
        raise ValueError(f"protocol must be 'ransac_log', 'lsq_disparity' or 'none', got {protocol!r}")
    return depth_metrics(aligned, gt, eval_mask)


# --------------------------------------------------------------------------------------------------
# Edge-aware chamfer distance (flying pixels)
# --------------------------------------------------------------------------------------------------

def depth_edge_band(
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    band_px: int = 3,
    canny: tuple[float, float] = (50.0, 150.0),
    edge_scale: EdgeScale = "linear",
) -> np.ndarray:
    """Band around the depth edges of ``gt``: Canny on an 8-bit image, dilated by ``band_px``.

    Follows PPD's ``detect_canny_edges`` (``align_depth_func.py``): the depth is min-max normalised
    to 0..255 and truncated to uint8 (here over the valid pixels only, invalid pixels set to 0),
    ``cv2.Canny(img, lo, hi)``, then ``band_px`` iterations of a 3x3 dilation (a square of half-width
    ``band_px``: every pixel within Chebyshev distance ``band_px`` of an edge). ``edge_scale="log"``
    normalises ``log(depth)`` instead, which balances near and far edges in scenes with a large depth
    range. Edge pixels next to invalid pixels (mask borders, holes) are dropped before dilation, and
    the band is restricted to valid pixels.

    Args:
        gt: (H, W) float, depth, metres; non-finite or <= 0 = invalid.
        mask: (H, W) bool or None, extra validity mask.
        band_px: dilation iterations (half-width of the band), >= 0.
        canny: ``(low, high)`` hysteresis thresholds on the 8-bit image.
        edge_scale: ``"linear"`` (official helper) or ``"log"``.

    Returns:
        (H, W) bool, True inside the band.

    Raises:
        ValueError: bad shapes, band_px < 0 or unknown edge_scale.
    """
    if gt.ndim != 2 or (mask is not None and mask.shape != gt.shape):
        raise ValueError(f"gt must be (H, W) and mask the same shape, got {gt.shape}, "
                         f"{None if mask is None else mask.shape}")
    if band_px < 0:
        raise ValueError(f"band_px must be >= 0, got {band_px}")
    if edge_scale not in ("linear", "log"):
        raise ValueError(f"edge_scale must be 'linear' or 'log', got {edge_scale!r}")
    valid = np.isfinite(gt) & (gt > 0)
    if mask is not None:
        valid &= mask
    if not valid.any():
        return np.zeros(gt.shape, dtype=bool)
    values = gt[valid].astype(np.float64)
    if edge_scale == "log":
        values = np.log(values)
    lo, hi = values.min(), values.max()
    image = np.zeros(gt.shape, dtype=np.uint8)
    if hi > lo:
        image[valid] = ((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)  # truncation, as .astype
    edges = cv2.Canny(image, float(canny[0]), float(canny[1])) > 0
    kernel = np.ones((3, 3), np.uint8)
    interior = cv2.erode(valid.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0
    edges &= interior  # drop edges of the invalid region itself
    band = cv2.dilate(edges.astype(np.uint8), kernel, iterations=band_px) > 0 if band_px else edges
    return band & valid


def edge_aware_chamfer(
    pred: np.ndarray,
    gt: np.ndarray,
    K: np.ndarray,
    mask: np.ndarray | None = None,
    band_px: int = 3,
    canny: tuple[float, float] = (50.0, 150.0),
    edge_scale: EdgeScale = "linear",
) -> float:
    """Edge-aware chamfer distance: how far predicted 3D points near depth edges are from the GT's.

    The band is :func:`depth_edge_band` of the GT (Canny on min-max normalised depth, default
    thresholds 50/150, dilated by ``band_px = 3`` pixels, as PPD's ``detect_canny_edges``). GT and
    predicted depths are back-projected with ``K`` (:func:`back_project`, integer pixel
    coordinates) on the band pixels where each is valid, and the symmetric chamfer distance is
    ``0.5 * (mean_p min_g |p - g| + mean_g min_p |g - p|)`` (nearest neighbours by ``cKDTree``).
    A perfect prediction gives 0; flying pixels (points strung between foreground and background)
    and blurred edges increase it.

    Args:
        pred: (H, W) float, aligned predicted depth, metres; non-finite or <= 0 = invalid.
        gt: (H, W) float, ground-truth depth, metres; non-finite or <= 0 = invalid.
        K: (3, 3) camera matrix, pixels, of this resolution.
        mask: (H, W) bool or None, extra validity mask (applied to both).
        band_px: half-width of the edge band, pixels.
        canny: Canny ``(low, high)`` thresholds on the 8-bit image.
        edge_scale: ``"linear"`` or ``"log"`` normalisation for Canny (see :func:`depth_edge_band`).

    Returns:
        Chamfer distance in metres (the depth's unit); NaN when the band holds no valid GT or no
        valid predicted point (e.g. an image without depth edges).

    Raises:
        ValueError: shapes differ, K not (3, 3), or bad band/edge parameters.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have one shape, got {pred.shape}, {gt.shape}")
    fx, fy, cx, cy = _intrinsics(K)
    band = depth_edge_band(gt, mask, band_px=band_px, canny=canny, edge_scale=edge_scale)
    pred_ok = band & np.isfinite(pred) & (pred > 0)
    if not band.any() or not pred_ok.any():
        return float("nan")
    gt_points = back_project(gt.astype(np.float32), fx, fy, cx, cy)[band].astype(np.float64)  # (Ng, 3)
    pred_points = back_project(pred.astype(np.float32), fx, fy, cx, cy)[pred_ok].astype(np.float64)  # (Np, 3)
    d_pred_to_gt, _ = cKDTree(gt_points).query(pred_points, k=1)
    d_gt_to_pred, _ = cKDTree(pred_points).query(gt_points, k=1)
    return float(0.5 * (d_pred_to_gt.mean() + d_gt_to_pred.mean()))


# --------------------------------------------------------------------------------------------------
# Temporal alignment error (Video Depth Anything)
# --------------------------------------------------------------------------------------------------

def temporal_alignment_error(
    depths: np.ndarray | Sequence[np.ndarray],
    poses: np.ndarray | Sequence[np.ndarray],
    K: np.ndarray,
    masks: np.ndarray | Sequence[np.ndarray] | None = None,
) -> float:
    """Temporal alignment error (TAE) as Video Depth Anything's ``benchmark/eval/eval_tae.py``.

    For each consecutive pair ``(t, t+1)`` and both directions (src -> dst): back-project every
    valid pixel of the source depth with ``K`` (integer pixel coordinates), transform it with
    ``T_dst_from_src = inv(T_world_from_dst) @ T_world_from_src``, project it into the destination
    image and round to the nearest pixel (half to even, as ``torch.round``); the projected ``z`` is
    written into an empty destination map (when several points land on one pixel the last in
    row-major source order wins, VDA's scatter; no z-buffer). Then
    ``AbsRel = mean(|d_dst - z_proj| / d_dst)`` over destination pixels with ``z_proj > 0``, a valid
    ``d_dst`` and the destination's mask. TAE is the mean over the ``2 (T - 1)`` directed pairs; as
    in VDA a pair without any such pixel counts as 0 (and is still in the denominator).

    VDA scores depth after one least-squares scale/shift per clip in disparity space
    (:func:`align_disparity_lsq` on the stacked clip) and reports ``100 * TAE``; this returns the
    fraction. Differences from the script: invalid depths (non-finite or <= 0, which VDA's clipped
    inputs never have) are skipped as sources and destinations, and source points with ``z <= 0``
    after the transform are dropped instead of being written as negative depth.

    Args:
        depths: (T, H, W) float (or a sequence of (H, W)), depth, metres, T >= 2.
        poses: (T, 4, 4) float, ``T_world_from_cam`` of each frame (camera -> world), metres.
        K: (3, 3) camera matrix, pixels, shared by all frames.
        masks: (T, H, W) bool or None; a pixel of frame ``t`` is scored only when it is True there.

    Returns:
        TAE as a fraction (0 for depths consistent with the poses).

    Raises:
        ValueError: bad shapes or fewer than 2 frames.
    """
    depths = np.asarray(depths)
    poses = np.asarray(poses, dtype=np.float64)
    if depths.ndim != 3 or depths.shape[0] < 2:
        raise ValueError(f"depths must be (T >= 2, H, W), got {depths.shape}")
    if poses.shape != (depths.shape[0], 4, 4):
        raise ValueError(f"poses must be ({depths.shape[0]}, 4, 4), got {poses.shape}")
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != depths.shape:
            raise ValueError(f"masks must have the depths' shape {depths.shape}, got {masks.shape}")
    intrinsics = _intrinsics(K)
    total = 0.0
    for t in range(depths.shape[0] - 1):
        T_next_from_cur = np.linalg.inv(poses[t + 1]) @ poses[t]
        mask_cur = None if masks is None else masks[t]
        mask_next = None if masks is None else masks[t + 1]
        total += _tae_directed(depths[t], depths[t + 1], T_next_from_cur, intrinsics, mask_next)
        total += _tae_directed(depths[t + 1], depths[t], np.linalg.inv(T_next_from_cur), intrinsics, mask_cur)
    return total / (2 * (depths.shape[0] - 1))


def _tae_directed(
    depth_src: np.ndarray,
    depth_dst: np.ndarray,
    T_dst_from_src: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    mask_dst: np.ndarray | None,
) -> float:
    """AbsRel of the source depth warped into the destination frame (0 when nothing overlaps)."""
    fx, fy, cx, cy = intrinsics
    h, w = depth_src.shape
    src = depth_src.astype(np.float64)
    valid_src = np.isfinite(src) & (src > 0)
    v, u = np.nonzero(valid_src)  # row-major order
    z = src[v, u]
    points = np.stack(((u - cx) * z / fx, (v - cy) * z / fy, z), axis=1)  # (N, 3) source frame
    points = points @ T_dst_from_src[:3, :3].T + T_dst_from_src[:3, 3]  # (N, 3) destination frame
    points = points[points[:, 2] > 0]
    z_dst = points[:, 2]
    u_dst = np.round(points[:, 0] * fx / z_dst + cx)
    v_dst = np.round(points[:, 1] * fy / z_dst + cy)
    inside = (u_dst >= 0) & (u_dst < w) & (v_dst >= 0) & (v_dst < h)
    flat = v_dst[inside].astype(np.int64) * w + u_dst[inside].astype(np.int64)  # (M,)
    z_dst = z_dst[inside]
    # Last write wins: keep the last occurrence of every target pixel.
    rev_unique, rev_first = np.unique(flat[::-1], return_index=True)
    projected = np.zeros(h * w)
    projected[rev_unique] = z_dst[::-1][rev_first]
    projected = projected.reshape(h, w)
    dst = depth_dst.astype(np.float64)
    valid = (projected > 0) & np.isfinite(dst) & (dst > 0)
    if mask_dst is not None:
        valid &= mask_dst
    if not valid.any():
        return 0.0
    return float(np.mean(np.abs(dst[valid] - projected[valid]) / dst[valid]))


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def _intrinsics(K: np.ndarray) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` from a (3, 3) camera matrix, pixels."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    return float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])



# --------------------------------------------------------------------------------------------------
# Temporal stability of a clip: flicker, recovery after scene cuts
# --------------------------------------------------------------------------------------------------

STABLE_GT_CHANGE = 0.01
"""Flicker pixels: those whose true depth changes by less than this fraction between consecutive frames."""


def flicker(depths: np.ndarray, gts: np.ndarray, cuts: Sequence[int] = (), stable: float = STABLE_GT_CHANGE) -> float:
    """Frame-to-frame jitter of an aligned depth clip where the true depth (almost) does not change.

    For every consecutive pair ``(t - 1, t)`` of one shot (pairs across a cut are skipped), on the pixels
    where both GT depths are valid (``> 1e-3``), both predictions finite and
    ``|gt_t - gt_(t-1)| < stable * gt_(t-1)``: ``|(d_t - d_(t-1)) - (gt_t - gt_(t-1))| / gt_(t-1)``, the change
    of the prediction beyond the true change (less than ``stable`` there), relative to the true depth.
    The mean over those pixels of all pairs together. 0 for a perfect prediction and for one off by a
    constant (``d = gt + c``).

    Args:
        depths: (T, H, W) float, aligned predicted depth, metres; non-finite = no prediction.
        gts: (T, H, W) float, ground-truth depth, metres; non-finite or <= 1e-3 = invalid.
        cuts: frame indices where a new shot starts.
        stable: the largest relative true change of a scored pixel.

    Returns:
        The mean relative change (a fraction); NaN when no pixel qualifies (e.g. T < 2).

    Raises:
        ValueError: shapes differ or are not (T, H, W).
    """
    depths = np.asarray(depths, dtype=np.float64)
    gts = np.asarray(gts, dtype=np.float64)
    if depths.ndim != 3 or depths.shape != gts.shape:
        raise ValueError(f"depths and gts must be one (T, H, W) shape, got {depths.shape}, {gts.shape}")
    cur = [t for t in range(1, len(depths)) if t not in set(cuts)]  # second frame of each scored pair
    prev = [t - 1 for t in cur]
    gt_change = gts[cur] - gts[prev]  # (P, H, W)
    with np.errstate(invalid="ignore"):  # NaN GT compares False
        valid = (gts[prev] > GT_MIN_DEPTH_M) & (gts[cur] > GT_MIN_DEPTH_M) & (np.abs(gt_change) < stable * gts[prev])
    valid &= np.isfinite(depths[prev]) & np.isfinite(depths[cur])
    if not valid.any():
        return float("nan")
    change = (depths[cur] - depths[prev] - gt_change)[valid]
    return float(np.mean(np.abs(change) / gts[prev][valid]))


def cut_recovery(errors: np.ndarray | Sequence[float], cuts: Sequence[int], tolerance: float = 0.1,
                 before: int = 8) -> list[int]:
    """Frames after each scene cut until a per-frame error is back within ``tolerance`` of its pre-cut level.

    The pre-cut level of cut ``c`` is the mean of the finite ``errors`` over the up to ``before`` frames
    before ``c`` in the shot that ``c`` ends. The recovery is the smallest ``k >= 0`` with
    ``errors[c + k] <= (1 + tolerance) * level`` before the next cut (0: the cut frame itself is within);
    when there is none ("never"), the frames from ``c`` to the next cut or the end.

    Args:
        errors: (T,) per-frame error, lower is better (e.g. AbsRel); NaN never counts as recovered.
        cuts: frame indices in (0, T) where a new shot starts, ascending.
        tolerance: relative margin over the pre-cut level.
        before: frames that set the pre-cut level.

    Returns:
        One frame count per cut, in the order of ``cuts``.

    Raises:
        ValueError: ``errors`` not 1-D, or cuts not ascending in (0, T).
    """
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 1:
        raise ValueError(f"errors must be (T,), got {errors.shape}")
    cuts = list(cuts)
    if any(not 0 < c < len(errors) for c in cuts) or cuts != sorted(set(cuts)):
        raise ValueError(f"cuts must be ascending frame indices in (0, {len(errors)}), got {cuts}")
    bounds = [0, *cuts, len(errors)]
    out = []
    for start, cut, end in zip(bounds[:-2], bounds[1:-1], bounds[2:]):
        pre = errors[max(start, cut - before):cut]
        level = np.mean(pre[np.isfinite(pre)]) if np.isfinite(pre).any() else np.nan
        within = np.flatnonzero(errors[cut:end] <= (1 + tolerance) * level)
        out.append(int(within[0]) if within.size else end - cut)
    return out
