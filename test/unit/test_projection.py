"""Back-projection and intrinsics scaling (pure numpy, depth_image_proc / image_proc conventions)."""
import numpy as np
import pytest

from pixel_perfect_ros.geometry.projection import back_project, scale_intrinsics

FX, FY, CX, CY = 525.0, 530.0, 319.5, 239.5
K = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])
P = np.array([[FX, 0.0, CX, -26.25], [0.0, FY, CY, 3.0], [0.0, 0.0, 1.0, 0.0]])


def test_plane_matches_pinhole_formula():
    height, width = 48, 64
    depth = np.full((height, width), 2.0, dtype=np.float32)
    points = back_project(depth, FX, FY, CX, CY)
    assert points.shape == (height, width, 3) and points.dtype == np.float32
    v, u = np.mgrid[0:height, 0:width]
    np.testing.assert_allclose(points[..., 0], (u - CX) * 2.0 / FX, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(points[..., 1], (v - CY) * 2.0 / FY, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(points[..., 2], 2.0)
    assert points[0, 0, 0] < 0 and points[0, 0, 1] < 0  # top-left pixel: x left (negative), y up (negative)


def test_points_project_back_to_their_pixels():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 20.0, (30, 40))  # float64 input is accepted
    points = back_project(depth, FX, FY, CX, CY).astype(np.float64)
    projected = points @ K.T  # (H, W, 3) homogeneous pixels
    v, u = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(projected[..., 0] / projected[..., 2], u, atol=1e-3)
    np.testing.assert_allclose(projected[..., 1] / projected[..., 2], v, atol=1e-3)
    np.testing.assert_allclose(points[..., 2], depth, rtol=1e-6)


def test_invalid_depth_gives_all_nan_and_zero_depth_is_the_origin():
    depth = np.array([[np.nan, np.inf, -np.inf, 0.0, 1.0]], dtype=np.float32)
    points = back_project(depth, FX, FY, 2.0, 0.0)  # unmasked, +-inf would give z = +-inf, x = +-inf or NaN
    assert np.isnan(points[0, :3]).all()
    np.testing.assert_array_equal(points[0, 3], [0.0, 0.0, 0.0])
    assert np.isfinite(points[0, 4]).all()


def test_stride_takes_the_full_resolution_points():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 5.0, (37, 53)).astype(np.float32)
    full = back_project(depth, FX, FY, CX, CY)
    for stride in (2, 3, 4):
        strided = back_project(depth, FX, FY, CX, CY, stride=stride)
        assert strided.shape == (-(-37 // stride), -(-53 // stride), 3)
        np.testing.assert_array_equal(strided, full[::stride, ::stride])
        # Same as projecting the decimated image with intrinsics scaled by 1/stride.
        K_d, _ = scale_intrinsics(K, P, 1.0 / stride, 1.0 / stride)
        decimated = back_project(depth[::stride, ::stride], K_d[0, 0], K_d[1, 1], K_d[0, 2], K_d[1, 2])
        np.testing.assert_allclose(decimated, strided, rtol=1e-5, atol=1e-6)


def test_out_buffer_receives_the_points():
    depth = np.full((4, 5), 3.0, dtype=np.float32)
    out = np.full((4, 5, 4), -7.0, dtype=np.float32)
    points = back_project(depth, FX, FY, CX, CY, out=out)
    assert np.shares_memory(points, out)
    np.testing.assert_array_equal(out[..., :3], back_project(depth, FX, FY, CX, CY))
    np.testing.assert_array_equal(out[..., 3], -7.0)  # untouched


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=np.ones((2, 2, 1), np.float32)), "depth must be"),
    (dict(depth=np.ones((2, 2), np.uint16)), "depth must be"),
    (dict(fx=0.0), "fx must be"),
    (dict(fy=np.nan), "fy must be"),
    (dict(stride=0), "stride"),
    (dict(stride=2.0), "stride"),
    (dict(out=np.empty((2, 2, 2), np.float32)), "out must be"),
    (dict(out=np.empty((2, 2, 3), np.float64)), "out must be"),
])
def test_back_project_rejects_bad_inputs(kwargs, match):
    args = dict(depth=np.ones((2, 2), np.float32), fx=FX, fy=FY, cx=CX, cy=CY) | kwargs
    with pytest.raises(ValueError, match=match):
        back_project(**args)


def test_scale_intrinsics_values():
    K2, P2 = scale_intrinsics(K, P, 0.5, 0.25)
    np.testing.assert_array_equal(K2, [[FX * 0.5, 0, CX * 0.5], [0, FY * 0.25, CY * 0.25], [0, 0, 1]])
    np.testing.assert_array_equal(P2, [[FX * 0.5, 0, CX * 0.5, -26.25 * 0.5],
                                       [0, FY * 0.25, CY * 0.25, 3.0 * 0.25], [0, 0, 1, 0]])
    assert K2 is not K and K[0, 0] == FX  # inputs untouched


def test_scaled_projection_scales_pixel_indices():
    """The convention: pixel index u of a 3D point becomes u * sx (no half-pixel shift)."""
    point = np.array([0.3, -0.2, 2.5, 1.0])
    sx, sy = 0.375, 1.5
    _, P2 = scale_intrinsics(K, P, sx, sy)
    uvw, uvw2 = P @ point, P2 @ point
    np.testing.assert_allclose(uvw2[:2] / uvw2[2], uvw[:2] / uvw[2] * [sx, sy], rtol=1e-12)


@pytest.mark.parametrize("args", [
    (np.eye(3)[:2], P, 1.0, 1.0), (K, P[:, :3], 1.0, 1.0), (K, P, 0.0, 1.0), (K, P, 1.0, -2.0),
    (K, P, np.inf, 1.0),
])
def test_scale_intrinsics_rejects_bad_inputs(args):
    with pytest.raises(ValueError):
        scale_intrinsics(*args)


def test_pixel_intrinsics_from_normalised_moge2_intrinsics():
    from pixel_perfect_ros.geometry.projection import pixel_intrinsics

    K = np.array([[0.5, 0.0, 0.5], [0.0, 2.0 / 3.0, 0.5], [0.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(pixel_intrinsics(K, 64, 48), [[32.0, 0.0, 31.5], [0.0, 32.0, 23.5], [0.0, 0.0, 1.0]],
                               rtol=1e-6)
