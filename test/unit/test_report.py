"""Report helpers (evaluation/report.py): metrics of a frame, colourising, depth strips, point-cloud views."""
import json
import math

import cv2
import numpy as np
import pytest

from pixel_perfect_ros.evaluation import report
from pixel_perfect_ros.evaluation.depth_io import colorize, colorize_depth

H, W = 48, 64
K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])


def turbo(level: int) -> np.ndarray:
    """The BGR colour of ``level`` (0..255) in OpenCV's turbo map."""
    return cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_TURBO)[0, 0]


def step_depth() -> np.ndarray:
    """(H, W) float32 metres: 2 m left of the middle column, 4 m from it on."""
    depth = np.full((H, W), 4.0, np.float32)
    depth[:, : W // 2] = 2.0
    return depth


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

def test_json_safe_replaces_non_finite_floats_with_null():
    value = report.json_safe({"a": [1.0, float("nan")], "b": {"c": float("inf"), "d": 2}})
    assert value == {"a": [1.0, None], "b": {"c": None, "d": 2}}
    json.dumps(value, allow_nan=False)  # raises on NaN


def test_markdown_table_formats_floats():
    table = report.markdown_table(("name", "value"), [("a", 0.123456), ("b", 2)])
    assert table.splitlines() == ["| name | value |", "|---|---|", "| a | 0.1235 |", "| b | 2 |"]


def test_colorize_maps_the_range_ends_clips_and_blacks_out_nan():
    values = np.array([[1.0, 3.0, np.nan, -5.0, 10.0]])
    image = colorize(values, 1.0, 3.0)
    assert image.shape == (1, 5, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], turbo(0))
    np.testing.assert_array_equal(image[0, 1], turbo(255))
    np.testing.assert_array_equal(image[0, 2], [0, 0, 0])
    np.testing.assert_array_equal(image[0, 3], turbo(0))  # clipped below
    np.testing.assert_array_equal(image[0, 4], turbo(255))  # clipped above


def test_colorize_depth_is_per_image_near_bright():
    image = colorize_depth(np.array([[2.0, 5.0, np.nan]]))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[0]
    assert gray[0] > gray[1] and gray[2] == 0


def test_inverse_depth_range_is_shared_and_skips_invalid_depth():
    near = np.full((4, 4), 1.0)
    far = np.full((4, 4), 4.0)
    far[0, 0], far[0, 1] = np.nan, 0.0
    lo, hi = report.inverse_depth_range(near, far)
    assert lo == pytest.approx(0.25) and hi == pytest.approx(1.0)
    assert report.inverse_depth_range(np.full((2, 2), np.nan)) == (0.0, 1.0)


def test_depth_strip_panels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    gt = step_depth()
    gt[-1, -1] = np.nan
    pred = gt.copy()
    pred[H // 2:, : W // 2] = 3.0  # half of the near plane 50 % too far
    strip = report.depth_strip(rgb, gt, pred)
    assert strip.shape == (H, 4 * W, 3) and strip.dtype == np.uint8
    below_label = slice(H // 2, H)  # the labels are at the top
    np.testing.assert_array_equal(strip[below_label, :W], rgb[below_label, :, ::-1])  # RGB panel, as BGR
    np.testing.assert_array_equal(strip[-1, 2 * W - 1], [0, 0, 0])  # NaN GT is black
    # Near (1/2 m) is the top of the shared range: red end; far (1/4 m) the bottom: blue end.
    np.testing.assert_array_equal(strip[-5, W + 2], turbo(255))
    np.testing.assert_array_equal(strip[-5, 2 * W - 3], turbo(0))
    # Error panel: 0 where pred = gt, 0.5 (the top) where 3 m was predicted for 2 m.
    np.testing.assert_array_equal(strip[-5, 4 * W - 3], turbo(0))
    np.testing.assert_array_equal(strip[-5, 3 * W + 2], turbo(255))


def test_label_draws_text_in_the_top_left_corner():
    image = np.zeros((40, 200, 3), np.uint8)
    report.label(image, "depth")
    assert image[:20, :60].any() and not image[25:].any()


# --------------------------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------------------------

def test_render_cloud_splats_a_point_at_its_projection():
    point = np.array([[0.5, -0.25, 2.0]])  # u = 60 * 0.25 + 31.5 = 46.5 -> 46 (round half even), v = 16
    image = report.render_cloud(point, np.array([[10, 20, 30]], np.uint8), np.eye(4), K, size=(H, W))
    assert image.shape == (H, W, 3)
    np.testing.assert_array_equal(image[16:18, 46:48].reshape(-1, 3), [[30, 20, 10]] * 4)  # RGB -> BGR
    assert (image.any(axis=2)).sum() == report.SPLAT_PX ** 2


def test_render_cloud_keeps_the_nearest_point_and_skips_invalid_ones():
    points = np.array([[0.0, 0.0, 4.0], [0.0, 0.0, 2.0], [0.0, 0.0, 3.0],  # one pixel: the 2 m point wins
                       [np.nan, 0.0, 1.0], [0.0, 0.0, -1.0], [50.0, 0.0, 1.0]])  # invalid, behind, outside
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9], [9, 9, 9], [9, 9, 9]], np.uint8)
    for order in (np.arange(6), np.arange(6)[::-1]):
        image = report.render_cloud(points[order], colors[order], np.eye(4), K, size=(H, W))
        np.testing.assert_array_equal(image[24, 32], [0, 255, 0])
        assert (image.any(axis=2)).sum() == report.SPLAT_PX ** 2


def test_orbit_view_keeps_the_pivot_and_moves_points_behind_it_sideways():
    pivot = np.array([0.0, 0.0, 3.0])
    T = report.orbit_view(pivot, 90.0)
    np.testing.assert_allclose(T[:3, :3] @ pivot + T[:3, 3], pivot, atol=1e-12)
    behind = T[:3, :3] @ np.array([0.0, 0.0, 4.0]) + T[:3, 3]
    np.testing.assert_allclose(behind, [-1.0, 0.0, 3.0], atol=1e-12)  # positive yaw: to the left
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)


def test_cloud_view_shows_the_pivot_at_the_centre_and_the_side_at_35_degrees():
    pivot = np.array([0.0, 0.0, 3.0])
    points = np.array([pivot, [0.0, 0.0, 4.0]])
    colors = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    image = report.cloud_view(points, colors, pivot, 35.0, "")
    height, width = report.VIEW_SIZE
    assert image.shape == (height, width, 3)
    np.testing.assert_array_equal(image[height // 2, width // 2], [0, 0, 255])  # the pivot, red, in front
    f = width / 2 / math.tan(math.radians(report.VIEW_HFOV_DEG) / 2)
    a = math.radians(35.0)
    u = round(f * -math.sin(a) / (3.0 + math.cos(a)) + (width - 1) / 2)  # the point 1 m behind the pivot
    np.testing.assert_array_equal(image[height // 2, u], [255, 0, 0])
