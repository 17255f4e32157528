"""Pinhole back-projection and intrinsics scaling, with depth_image_proc's conventions.

Pixel coordinates are integer indices: pixel ``(v, u)`` (row, column) sits at ``(u, v)`` in the
image plane, the same convention as ``depth_image_proc``'s ``convertDepth`` and ``image_proc``'s
resize. Points are in the camera optical frame (x right, y down, z forward) and in the unit of the
depth they come from.
"""
from __future__ import annotations

import math

import numpy as np


def back_project(
    depth: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    *,
    stride: int = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Back-project a depth image to 3D points, exactly as depth_image_proc's ``convertDepth``.

    ``X = (u - cx) * z / fx``, ``Y = (v - cy) * z / fy``, ``Z = z`` for the integer pixel indices
    ``u`` (column) and ``v`` (row). With ``stride = s`` only pixels ``(s*i, s*j)`` are projected
    (decimation starting at pixel 0): the points are the very points of those full-resolution pixels,
    which equals projecting ``depth[::s, ::s]`` with ``scale_intrinsics(K, P, 1/s, 1/s)``.

    Args:
        depth: (H, W) float, any unit (metres, or relative units), z along the optical axis.
            Non-finite values (NaN, +-inf) are invalid.
        fx: focal length along x, pixels (nonzero, finite).
        fy: focal length along y, pixels (nonzero, finite).
        cx: principal point x, pixels.
        cy: principal point y, pixels.
        stride: decimation step >= 1 in both axes.
        out: optional (h, w, >= 3) float32 array to write into, ``h = ceil(H / stride)``,
            ``w = ceil(W / stride)``; only its first three channels are written (e.g. the x, y, z
            slots of a packed point-cloud buffer).

    Returns:
        (h, w, 3) float32 points in the camera optical frame, the depth's unit; all three
        coordinates NaN where the depth is invalid. A view of ``out`` when given.

    Raises:
        ValueError: depth not a 2-D float array, non-finite or zero focal length, stride < 1, or
            ``out`` of the wrong shape or dtype.
    """
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be a (H, W) float array, got shape {depth.shape} dtype {depth.dtype}")
    for name, f in (("fx", fx), ("fy", fy)):
        if not math.isfinite(f) or f == 0.0:
            raise ValueError(f"{name} must be finite and nonzero, got {f}")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride}")
    z = depth[::stride, ::stride]  # (h, w)
    h, w = z.shape
    if out is None:
        out = np.empty((h, w, 3), dtype=np.float32)
    elif out.shape[:2] != (h, w) or out.ndim != 3 or out.shape[2] < 3 or out.dtype != np.float32:
        raise ValueError(f"out must be a ({h}, {w}, >=3) float32 array, got shape {out.shape} dtype {out.dtype}")
    points = out[..., :3]
    # Per-column and per-row ray factors in float64, then float32 like depth_image_proc's constants.
    ray_x = ((np.arange(0, depth.shape[1], stride) - cx) / fx).astype(np.float32)  # (w,)
    ray_y = ((np.arange(0, depth.shape[0], stride) - cy) / fy).astype(np.float32)  # (h,)
    z_out = points[..., 2]  # (h, w) strided view, no temporary depth copy
    np.copyto(z_out, z, casting="same_kind")
    np.copyto(z_out, np.nan, where=~np.isfinite(z_out))  # +-inf -> NaN
    np.multiply(z_out, ray_x[None, :], out=points[..., 0])
    np.multiply(z_out, ray_y[:, None], out=points[..., 1])
    return points


def scale_intrinsics(K: np.ndarray, P: np.ndarray, sx: float, sy: float) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics of the image resized by ``(sx, sy)`` (new size = old size * factor).

    Pixel coordinates scale as ``u' = u * sx``, ``v' = v * sy``: ``fx, skew, cx`` (and ``P``'s
    ``Tx = P[0, 3]``) are multiplied by ``sx``, ``fy, cy`` (and ``Ty = P[1, 3]``) by ``sy``. This is
    image_proc's resize convention (``cx' = cx * sx``, no half-pixel correction), kept for
    compatibility; it is exact for decimation (keeping every s-th pixel from pixel 0, ``sx = 1/s``)
    and binning, while an area/bilinear resize of pixel centres (``u' = (u + 0.5) * sx - 0.5``) differs
    by ``0.5 * (sx - 1)`` pixels in the principal point.

    Args:
        K: (3, 3) float camera matrix, pixels.
        P: (3, 4) float projection matrix, pixels (``Tx``, ``Ty`` in pixels * baseline unit).
        sx: horizontal scale factor, > 0.
        sy: vertical scale factor, > 0.

    Returns:
        ``(K', P')``: (3, 3) and (3, 4) float64, new arrays.

    Raises:
        ValueError: wrong shapes, or a non-finite or non-positive factor.
    """
    K = np.asarray(K, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    if K.shape != (3, 3) or P.shape != (3, 4):
        raise ValueError(f"K must be (3, 3) and P (3, 4), got {K.shape} and {P.shape}")
    for name, s in (("sx", sx), ("sy", sy)):
        if not math.isfinite(s) or s <= 0.0:
            raise ValueError(f"{name} must be finite and > 0, got {s}")
    scale = np.diag([sx, sy, 1.0])
    return scale @ K, scale @ P


def pixel_intrinsics(K_normalised: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel camera matrix of a ``width x height`` image from normalised intrinsics (MoGe-2's).

    MoGe-2's ``K`` is in units of image width/height with the pixel-centre convention (pixel (i, j) at
    ``((j + 0.5) / W, (i + 0.5) / H)``); this returns the integer-index convention of ``back_project``
    and depth_image_proc: ``fx * W``, ``fy * H``, ``cx * W - 0.5``, ``cy * H - 0.5``.

    Returns:
        (3, 3) float64.
    """
    K = np.asarray(K_normalised, dtype=np.float64)
    return np.array([[K[0, 0] * width, 0.0, K[0, 2] * width - 0.5],
                     [0.0, K[1, 1] * height, K[1, 2] * height - 0.5],
                     [0.0, 0.0, 1.0]])
