"""Flying-pixel filter on analytic scenes with mixed pixels, and Open3D-style statistical outlier removal."""
import numpy as np
import pytest

from pixel_perfect_ros.geometry.filters import (
    flying_pixel_mask,
    remove_flying_pixels,
    statistical_outlier_mask,
)
from pixel_perfect_ros.tools import bench_filters

H, W = 96, 128
FX = FY = 100.0
CX, CY = 63.5, 47.5


def rays(height=H, width=W, supersample=1):
    """(H*s, W*s, 3) float64 viewing rays (z = 1) through sub-pixel centres of an s x s grid per pixel."""
    u = (np.arange(width * supersample) + 0.5) / supersample - 0.5
    v = (np.arange(height * supersample) + 0.5) / supersample - 0.5
    uu, vv = np.meshgrid(u, v)
    return np.stack([(uu - CX) / FX, (vv - CY) / FY, np.ones_like(uu)], axis=-1)


def plane_depth(normal, distance, supersample=1):
    """Depth of the plane ``n . X = distance`` (NaN where the ray misses it), float64."""
    denom = rays(supersample=supersample) @ (np.asarray(normal, float) / np.linalg.norm(normal))
    with np.errstate(divide="ignore"):
        return np.where(denom > 1e-9, distance / denom, np.nan)


def step_with_mixed_pixels(rng, near=1.0, far=3.0):
    """Vertical, horizontal and diagonal step edges whose edge pixels blend near and far depth.

    Returns (H, W) float32 depth and the (H, W) bool truth of flying pixels. Each flying pixel is
    ``alpha * near + (1 - alpha) * far`` with ``alpha ~ U(0.1, 0.9)`` (so it is more than 5 % away
    from both surfaces), one pixel wide, as a bilinear resample of a depth discontinuity.
    """
    v, u = np.mgrid[0:H, 0:W]
    region = np.where(u < 40, u - 30.0, np.where(v < 48, v - 20.0, (u - 80.0) + (v - 60.0)))  # signed distance
    depth = np.where(region < 0, near, far)
    flying = region == 0  # the edge line itself
    alpha = rng.uniform(0.1, 0.9, flying.sum())
    depth[flying] = alpha * near + (1 - alpha) * far
    return depth.astype(np.float32), flying


def sphere_in_front_of_a_wall(supersample=8):
    """Anti-aliased rendering: depth = mean over s x s sub-pixels (mixed pixels on the silhouette).

    Returns (H, W) float32 depth and the (H, W) sphere coverage in [0, 1].
    """
    r = rays(supersample=supersample)
    wall = plane_depth((0.3, -0.2, 1.0), 4.0, supersample)  # tilted wall about 4 m away
    centre, radius = np.array([0.1, 0.05, 2.0]), 0.5
    dirs = r / np.linalg.norm(r, axis=-1, keepdims=True)
    b = dirs @ centre
    disc = b ** 2 - (centre @ centre - radius ** 2)
    t = b - np.sqrt(np.maximum(disc, 0.0))
    sphere = np.where(disc > 0, t * dirs[..., 2], np.inf)
    hit = sphere < wall
    depth = np.where(hit, sphere, wall)
    s = supersample
    coverage = hit.reshape(H, s, W, s).mean(axis=(1, 3))
    return depth.reshape(H, s, W, s).mean(axis=(1, 3)).astype(np.float32), coverage


# --------------------------------------------------------------------------------------------------
# flying_pixel_mask / remove_flying_pixels
# --------------------------------------------------------------------------------------------------

def test_hand_checkable_rows():
    depth = np.array([[1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0],
                      [1.0, 1.0, 1.0, 1.04, 3.0, 3.0, 3.0],  # 4 % from the near side: a surface pixel
                      [1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0]], dtype=np.float32)
    mask = flying_pixel_mask(depth, rel_threshold=0.05, connectivity=4)
    expected = np.zeros(depth.shape, dtype=bool)
    expected[0, 3] = True  # 2 m between 1 m and 3 m, off both surfaces
    np.testing.assert_array_equal(mask, expected)
    # A plane's inverse depth is affine along a row: 1/d = 1 - 0.1 u has jumps > 5 % but is kept.
    ramp = (1.0 / (1.0 - 0.1 * np.arange(8)))[None, :].repeat(5, axis=0).astype(np.float32)
    assert not flying_pixel_mask(ramp, 0.05, connectivity=4).any()
    assert not flying_pixel_mask(ramp, 0.05, connectivity=8).any()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_step_edges_lose_their_mixed_pixels_and_keep_the_interior(connectivity):
    depth, flying = step_with_mixed_pixels(np.random.default_rng(0))
    mask = flying_pixel_mask(depth, rel_threshold=0.05, connectivity=connectivity)
    assert mask[flying].mean() >= 0.95
    assert 1.0 - mask[~flying].mean() >= 0.99


def test_antialiased_sphere_silhouette():
    depth, coverage = sphere_in_front_of_a_wall()
    mixed = (coverage > 0.1) & (coverage < 0.9)
    assert mixed.sum() > 100
    mask = flying_pixel_mask(depth, 0.05)
    assert mask[mixed].mean() >= 0.95
    pure = (coverage == 0.0) | (coverage == 1.0)
    assert mask[pure].mean() <= 0.01  # sphere (curved, steep at its rim) and wall are kept


@pytest.mark.parametrize("normal", [(0, 0, 1), (0.5, 0, 1), (0, -1, 1), (3, 0, 1), (0, 5, 1), (2, 2, 1),
                                    (10, 0, 1), (0, 20, 1)])
def test_planes_even_steep_lose_less_than_one_percent(normal):
    depth = plane_depth(normal, 2.0).astype(np.float32)
    valid = np.isfinite(depth)
    assert valid.mean() > 0.5
    mask = flying_pixel_mask(depth, 0.05)
    assert mask[valid].mean() < 0.01


def test_two_planes_at_different_depths_with_mixed_boundary():
    near = plane_depth((0.2, 0.0, 1.0), 1.5)
    far = plane_depth((0.0, 0.3, 1.0), 5.0)
    v, u = np.mgrid[0:H, 0:W]
    depth = np.where(u < 64, near, far)
    depth[:, 64] = 0.5 * (near[:, 64] + far[:, 64])  # one mixed column
    mask = flying_pixel_mask(depth.astype(np.float32), 0.05)
    assert mask[:, 64].mean() >= 0.95
    assert mask[:, np.r_[0:64, 65:W]].mean() < 0.01


def test_nan_and_nonpositive_input():
    depth = plane_depth((0.3, 0.1, 1.0), 2.0).astype(np.float32)
    depth[40:50, 40:50] = np.nan  # a hole
    depth[0, 0] = 0.0
    depth[0, 1] = -1.0
    depth[0, 2] = np.inf
    mask = flying_pixel_mask(depth, 0.05)
    invalid = ~np.isfinite(depth) | (depth <= 0)
    assert mask[invalid].all()  # invalid pixels are reported
    assert not mask[~invalid].any()  # the hole's border is not flying
    out = remove_flying_pixels(depth, 0.05)
    assert np.isnan(out[invalid]).all() and np.array_equal(out[~invalid], depth[~invalid])


def test_remove_flying_pixels_sets_nan_and_off_returns_a_copy():
    depth, flying = step_with_mixed_pixels(np.random.default_rng(1))
    out = remove_flying_pixels(depth, 0.05)
    assert out.dtype == depth.dtype and np.isnan(out[flying]).mean() >= 0.95
    assert not np.isnan(depth).any()  # input untouched
    for off in (None, 0.0, -1.0):
        same = remove_flying_pixels(depth, off)
        assert same is not depth and np.array_equal(same, depth)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="float"):
        flying_pixel_mask(np.ones((4, 4), dtype=np.uint16))
    with pytest.raises(ValueError, match="rel_threshold"):
        flying_pixel_mask(np.ones((4, 4), dtype=np.float32), 0.0)
    with pytest.raises(ValueError, match="connectivity"):
        flying_pixel_mask(np.ones((4, 4), dtype=np.float32), 0.05, connectivity=6)


# --------------------------------------------------------------------------------------------------
# statistical_outlier_mask
# --------------------------------------------------------------------------------------------------

def test_sor_hand_example_on_a_line():
    # k = 2 (self + nearest): avg = [0.5, 0.5, 0.5, 0.5, 48.5]; mean = 10.1;
    # std = sqrt((4 * 9.6^2 + 38.4^2) / 4) = 21.466...; thresholds 31.57 (ratio 1) and 53.03 (ratio 2).
    points = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [100, 0, 0]])
    np.testing.assert_array_equal(statistical_outlier_mask(points, 2, 1.0), [True, True, True, True, False])
    assert statistical_outlier_mask(points, 2, 2.0).all()


def test_sor_matches_brute_force_open3d_rules():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 3))
    points[:5] *= 6.0
    k, ratio = 8, 1.5
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    avg = np.sort(dist, axis=1)[:, :k].mean(axis=1)  # self (0) included
    mean = avg.sum() / len(avg)
    std = np.sqrt(np.sum((avg - mean) ** 2) / (len(avg) - 1))
    np.testing.assert_array_equal(statistical_outlier_mask(points, k, ratio), avg < mean + ratio * std)


def test_sor_removes_far_outliers_from_a_plane_and_keeps_the_plane():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1.0, 1.0, (4000, 2))
    plane = np.column_stack([xy, 2.0 + 0.3 * xy[:, 0] + 0.001 * rng.normal(size=4000)])
    outliers = np.column_stack([rng.uniform(-1, 1, (8, 2)), rng.uniform(3.0, 5.0, 8)])  # 1-3 m off the plane
    points = np.vstack([plane, outliers, [[np.nan, np.nan, np.nan]]])
    inliers = statistical_outlier_mask(points, nb_neighbors=20, std_ratio=3.0)
    assert not inliers[4000:].any()  # every injected outlier (and the NaN point) removed
    assert inliers[:4000].mean() >= 0.99


def test_sor_duplicates_are_outliers_as_in_open3d():
    points = np.vstack([np.zeros((3, 3)), np.eye(3)])
    inliers = statistical_outlier_mask(points, nb_neighbors=2, std_ratio=3.0)
    assert not inliers[:3].any() and inliers[3:].all()  # mean neighbour distance 0 -> dropped


# --------------------------------------------------------------------------------------------------
# tools/bench_filters (CLI, tiny size)
# --------------------------------------------------------------------------------------------------

def test_bench_filters_runs_and_validates_arguments(capsys):
    assert bench_filters.main(["--width", "64", "--height", "48", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "flying_pixel_mask 8-conn" in out and "statistical_outlier_mask" in out and "edge_aware_chamfer" in out
    with pytest.raises(SystemExit) as exc:
        bench_filters.parse_args(["--sor-repeats", "0"])
    assert exc.value.code == 2
