"""Flying-pixel filters: a cheap image-space test and Open3D's statistical outlier removal (numpy/scipy).

Flying (mixed) pixels sit at depth discontinuities with a depth between the foreground and the
background, so their 3D points hang in the air between the two surfaces. :func:`flying_pixel_mask`
finds them in the depth image with a few shifted-array comparisons (suitable per frame in a node);
:func:`statistical_outlier_mask` is the point-cloud filter of PPD's ``run_point_cloud.py`` (Open3D's
``remove_statistical_outlier``), much more expensive and meant for offline use.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

DIRECTIONS = {
    4: ((0, 1), (1, 0)),
    8: ((0, 1), (1, 0), (1, 1), (1, -1)),
}
"""Connectivity -> (dy, dx) of the neighbour-pair directions tested (each pair is -d and +d)."""
PAD = 2
"""Border padding, pixels (the test reads neighbours up to 2 pixels away)."""


def flying_pixel_mask(depth: np.ndarray, rel_threshold: float = 0.05, connectivity: int = 8) -> np.ndarray:
    """Flying-pixel (and invalid-pixel) mask of a depth image.

    A valid pixel of depth ``d`` is flying when, along some direction (horizontal, vertical and,
    with ``connectivity=8``, the two diagonals) with neighbours ``a`` (at -1) and ``b`` (at +1):

    1. ``d`` lies strictly between ``a`` and ``b`` (a near and a far neighbour),
    2. it differs from both by more than ``rel_threshold * d``, and
    3. it is not the continuation of a surface on either side: the depth linearly extrapolated in
       inverse depth from ``(a, a2)`` (``1/d_a = 2/a - 1/a2``, ``a2`` the pixel at -2), and likewise
       from ``(b, b2)``, both differ from ``d`` by more than ``rel_threshold * d``.

    Inverse depth is affine in pixel coordinates on any plane, so rule 3 keeps planes, however
    steep, while a mixed pixel between two surfaces is far from both extrapolations. Neighbours
    outside the image or invalid never make a pixel flying: a missing ``a`` or ``b`` fails rule 1, a
    missing ``a2`` means the surface on that side cannot be confirmed, and when both ``a2`` and
    ``b2`` are missing (pixels next to two holes, or next to image corners on a diagonal) rule 3
    cannot be tested and the pixel is kept. Vectorised: one pass of shifted comparisons per
    direction, then rule 3 on the (few) candidates only.

    Args:
        depth: (H, W) float32/float64 depth, any unit (metres or relative), NaN/inf/<= 0 = invalid.
        rel_threshold: relative depth jump, > 0 (0.05 = 5 % of the pixel's depth).
        connectivity: 4 (horizontal/vertical) or 8 (plus diagonals).

    Returns:
        (H, W) bool, True = flying or invalid.

    Raises:
        ValueError: depth not a 2-D float array, rel_threshold not > 0, connectivity not 4 or 8.
    """
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be a (H, W) float array, got shape {depth.shape} dtype {depth.dtype}")
    if not rel_threshold > 0:
        raise ValueError(f"rel_threshold must be > 0, got {rel_threshold}")
    if connectivity not in DIRECTIONS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    h, w = depth.shape
    with np.errstate(invalid="ignore"):
        invalid = ~(depth > 0) | ~np.isfinite(depth)  # NaN compares False
    padded = np.full((h + 2 * PAD, w + 2 * PAD), np.nan, dtype=depth.dtype)  # (H+4, W+4)
    center = padded[PAD:PAD + h, PAD:PAD + w]
    np.copyto(center, depth)
    center[invalid] = np.nan
    flat = padded.ravel()
    wp = w + 2 * PAD
    thr = center * depth.dtype.type(rel_threshold)  # (H, W) absolute threshold per pixel
    lower = center - thr  # a neighbour below this is "near"
    upper = center + thr  # a neighbour above this is "far"
    flying = invalid.copy()
    with np.errstate(invalid="ignore"):
        for dy, dx in DIRECTIONS[connectivity]:
            a = padded[PAD - dy:PAD - dy + h, PAD - dx:PAD - dx + w]  # neighbour at -d
            b = padded[PAD + dy:PAD + dy + h, PAD + dx:PAD + dx + w]  # neighbour at +d
            # Rules 1 and 2: one neighbour nearer and the other farther, both beyond the threshold.
            candidate = ((a < lower) & (b > upper)) | ((a > upper) & (b < lower))
            pix = np.flatnonzero(candidate)  # (M,) flat index into (H, W); far cheaper than nonzero()
            if pix.size == 0:
                continue
            ys, xs = np.divmod(pix, w)
            idx = (ys + PAD) * wp + (xs + PAD)  # flat index into padded
            off = dy * wp + dx
            d = flat[idx].astype(np.float64)
            a2 = flat[idx - 2 * off]
            b2 = flat[idx + 2 * off]
            # Rule 3: not on the surface extrapolated from either side (testable on at least one side).
            off_a = ~_on_extrapolated_surface(d, flat[idx - off], a2, rel_threshold)
            off_b = ~_on_extrapolated_surface(d, flat[idx + off], b2, rel_threshold)
            testable = np.isfinite(a2) | np.isfinite(b2)
            flying.ravel()[pix] |= off_a & off_b & testable
    return flying


def remove_flying_pixels(depth: np.ndarray, rel_threshold: float | None = 0.05, connectivity: int = 8) -> np.ndarray:
    """Copy of ``depth`` with flying and invalid pixels set to NaN (REP 118's invalid for 32FC1).

    Args:
        depth: (H, W) float depth, any unit; NaN/inf/<= 0 = invalid.
        rel_threshold: see :func:`flying_pixel_mask`; None or <= 0 turns the filter off (the copy is
            returned unchanged, invalid values included).
        connectivity: 4 or 8.

    Returns:
        (H, W) new array, ``depth``'s dtype.

    Raises:
        ValueError: as :func:`flying_pixel_mask`.
    """
    out = depth.copy()
    if rel_threshold is None or rel_threshold <= 0:
        return out
    out[flying_pixel_mask(depth, rel_threshold, connectivity)] = np.nan
    return out


def statistical_outlier_mask(points: np.ndarray, nb_neighbors: int = 20, std_ratio: float = 3.0,
                             workers: int = -1) -> np.ndarray:
    """Inliers of Open3D's ``remove_statistical_outlier`` (PPD's point-cloud filter), with cKDTree.

    Open3D's exact rules: each point's ``k = nb_neighbors`` nearest neighbours include the point
    itself (distance 0); ``avg_i`` = mean distance to them; ``mean`` = sum of the positive
    ``avg_i`` over the number of points, ``std`` = sqrt(sum over positive ``avg_i`` of
    ``(avg_i - mean)^2`` / (n - 1)); a point is an inlier iff ``0 < avg_i < mean + std_ratio * std``
    (so a point with ``nb_neighbors`` exact duplicates is an outlier, as in Open3D). Non-finite points
    (NaN of organized clouds) are outliers and take no part.

    Args:
        points: (N, 3) float, any unit.
        nb_neighbors: k >= 1 (the point itself included, as Open3D).
        std_ratio: > 0.
        workers: threads for the neighbour query (-1 = all cores, as Open3D's TBB loop).

    Returns:
        (N,) bool, True = inlier.

    Raises:
        ValueError: points not (N, 3), nb_neighbors < 1 or std_ratio <= 0.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    if nb_neighbors < 1 or not std_ratio > 0:
        raise ValueError(f"nb_neighbors must be >= 1 and std_ratio > 0, got {nb_neighbors}, {std_ratio}")
    finite = np.all(np.isfinite(points), axis=1)
    inliers = np.zeros(points.shape[0], dtype=bool)
    n = int(finite.sum())
    if n < 2:  # Open3D's std divides by n - 1
        return inliers
    valid_points = points[finite].astype(np.float64)
    k = min(nb_neighbors, n)
    dist, _ = cKDTree(valid_points).query(valid_points, k=k, workers=workers)  # (n, k), self at 0
    avg = dist.reshape(n, k).mean(axis=1)  # (n,)
    positive = avg > 0
    mean = avg[positive].sum() / n
    std = np.sqrt(np.sum((avg[positive] - mean) ** 2) / (n - 1))
    inliers[finite] = positive & (avg < mean + std_ratio * std)
    return inliers


def _on_extrapolated_surface(d: np.ndarray, n1: np.ndarray, n2: np.ndarray, rel_threshold: float) -> np.ndarray:
    """True where ``d`` is within ``rel_threshold * d`` of the depth extrapolated from ``n1, n2``.

    The extrapolation is linear in inverse depth (exact on planes): ``1/e = 2/n1 - 1/n2``. NaN
    neighbours or an extrapolation past infinity (``1/e <= 0``) give False.
    """
    ratio = d * (2.0 / n1.astype(np.float64) - 1.0 / n2.astype(np.float64))  # d / e
    return (ratio > 0) & (np.abs(ratio - 1.0) <= rel_threshold * ratio)  # |e - d| <= thr * d
