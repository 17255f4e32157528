"""Depth-evaluation report helpers (numpy and OpenCV only): colourised depth strips, point-cloud views,
JSON and Markdown output.

Used by ``evaluation/sequence.py`` (the reports of ppd-bag-eval, ppd-bag-replay and ppd-demo). Images are OpenCV BGR
uint8; depth is metres along the optical axis of the camera optical frame (x right, y down, z
forward), NaN = invalid.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..geometry.camera import PinholeCamera
from .depth_io import colorize

ERROR_RANGE = 0.5
"""Relative error ``|pred - gt| / gt`` at the top of the error colour map (0 at the bottom)."""
RANGE_PERCENTILES = (1.0, 99.0)
"""Percentiles of the inverse depth spanned by the shared depth colour range."""
VIEW_SIZE = (360, 480)
"""(height, width) of a point-cloud view, pixels."""
VIEW_HFOV_DEG = 90.0
"""Horizontal field of view of a point-cloud view, degrees."""
SPLAT_PX = 2
"""Side of the square each point covers in a point-cloud view, pixels."""
NEAR_M = 0.05
"""Points nearer than this to a view's camera are not drawn, metres."""


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------

def json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def markdown_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A Markdown table; floats written with 4 significant digits."""
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Depth images
# --------------------------------------------------------------------------------------------------

def inverse_depth_range(*depths: np.ndarray) -> tuple[float, float]:
    """One inverse-depth range for several depth maps: ``RANGE_PERCENTILES`` of all their valid pixels.

    Args:
        *depths: (H, W) float depth, metres; non-finite or <= 0 = invalid.

    Returns:
        ``(lo, hi)`` inverse depth, 1/metres (``(0, 1)`` when no pixel is valid).
    """
    inverse = np.concatenate([1.0 / d[np.isfinite(d) & (d > 0)] for d in depths])
    if inverse.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(inverse, RANGE_PERCENTILES)
    return float(lo), float(hi)


def label(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` (BGR uint8, modified in place and returned) with ``text`` in its top-left corner."""
    scale = max(0.35, image.shape[1] / 640.0)
    origin = (4, int(round(14 * scale / 0.4)))
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def depth_strip(rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB | GT depth | predicted depth | ``|pred - gt| / gt``, side by side and labelled.

    Both depths share one ``inverse_depth_range`` (near red, far blue); the error runs from 0 (blue)
    to ``ERROR_RANGE`` (red); invalid pixels are black.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        gt: (H, W) float, ground-truth depth, metres, NaN = invalid.
        pred: (H, W) float, predicted depth, metres, NaN = invalid.

    Returns:
        (H, 4 W, 3) uint8 BGR.
    """
    lo, hi = inverse_depth_range(gt, pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.abs(pred - gt) / gt
        panels = [(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "RGB"), (colorize(1.0 / gt, lo, hi), "GT depth"),
                  (colorize(1.0 / pred, lo, hi), "predicted"),
                  (colorize(error, 0.0, ERROR_RANGE), f"|pred-gt|/gt 0..{ERROR_RANGE}")]
    return np.hstack([label(np.ascontiguousarray(image), text) for image, text in panels])


# --------------------------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------------------------

def orbit_view(pivot: np.ndarray, yaw_deg: float) -> np.ndarray:
    """The pose of the camera orbited by ``yaw_deg`` about the vertical axis through ``pivot``.

    The view is the camera turned about the optical frame's y axis (down) around ``pivot``, which
    keeps its place in the image: positive yaw moves the viewer to the camera's left, so points behind
    the pivot move left in the view.

    Args:
        pivot: (3,) point in the camera optical frame, metres.
        yaw_deg: rotation, degrees.

    Returns:
        (4, 4) float64 ``T_view_from_cam``.
    """
    a = math.radians(yaw_deg)
    R = np.array([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0], [math.sin(a), 0.0, math.cos(a)]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = pivot - R @ pivot  # the pivot stays where it is
    return T


def render_cloud(points: np.ndarray, rgb: np.ndarray, T_view_from_cam: np.ndarray, K: np.ndarray,
                 size: tuple[int, int] = VIEW_SIZE) -> np.ndarray:
    """Splat coloured points into a pinhole view with a z-buffer (the nearest point wins each pixel).

    Each point covers ``SPLAT_PX x SPLAT_PX`` pixels from its rounded projection ``(u, v)`` to the
    right and down; points with non-finite coordinates or nearer than ``NEAR_M`` are skipped.

    Args:
        points: (..., 3) float, metres, camera optical frame; NaN = no point.
        rgb: (..., 3) uint8 RGB of the points.
        T_view_from_cam: (4, 4) pose of the view (optical frame) relative to the camera.
        K: (3, 3) camera matrix of the view, pixels.
        size: (height, width) of the view, pixels.

    Returns:
        (height, width, 3) uint8 BGR, black where no point falls.
    """
    height, width = size
    points = points.reshape(-1, 3).astype(np.float64)
    colors = rgb.reshape(-1, 3)
    ok = np.isfinite(points).all(axis=1)
    view = points[ok] @ T_view_from_cam[:3, :3].T + T_view_from_cam[:3, 3]  # (N, 3)
    colors = colors[ok]
    front = view[:, 2] > NEAR_M
    view, colors = view[front], colors[front]
    u = np.round(K[0, 0] * view[:, 0] / view[:, 2] + K[0, 2]).astype(np.int64)  # (N,)
    v = np.round(K[1, 1] * view[:, 1] / view[:, 2] + K[1, 2]).astype(np.int64)
    du, dv = np.meshgrid(np.arange(SPLAT_PX), np.arange(SPLAT_PX))
    us = (u[:, None] + du.ravel()).ravel()  # (N * SPLAT_PX^2,)
    vs = (v[:, None] + dv.ravel()).ravel()
    depth = np.repeat(view[:, 2], SPLAT_PX ** 2)
    source = np.repeat(np.arange(len(view)), SPLAT_PX ** 2)
    inside = (us >= 0) & (us < width) & (vs >= 0) & (vs < height)
    pixel = vs[inside] * width + us[inside]
    order = np.lexsort((depth[inside], pixel))  # by pixel, nearest first
    pixel, winner = np.unique(pixel[order], return_index=True)
    image = np.zeros((height * width, 3), np.uint8)
    image[pixel] = colors[source[inside][order[winner]]][:, ::-1]  # RGB -> BGR
    return image.reshape(height, width, 3)


def cloud_view(points: np.ndarray, rgb: np.ndarray, pivot: np.ndarray, yaw_deg: float, text: str) -> np.ndarray:
    """``render_cloud`` from ``orbit_view(pivot, yaw_deg)`` at ``VIEW_SIZE`` and ``VIEW_HFOV_DEG``, labelled.

    Args:
        points: (..., 3) float, metres, camera optical frame; NaN = no point.
        rgb: (..., 3) uint8 RGB of the points.
        pivot: (3,) point to orbit around, metres, camera optical frame.
        yaw_deg: orbit angle, degrees.
        text: the label.

    Returns:
        (VIEW_SIZE, 3) uint8 BGR.
    """
    K = PinholeCamera.from_fov(VIEW_SIZE[1], VIEW_SIZE[0], VIEW_HFOV_DEG).K
    return label(render_cloud(points, rgb, orbit_view(pivot, yaw_deg), K), text)
