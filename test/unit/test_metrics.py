"""Depth metrics on analytic scenes: official AbsRel/deltas, protocols, edge-aware chamfer, TAE."""
import numpy as np
import pytest

from pixel_perfect_ros.geometry.metrics import (
    aligned_metrics,
    depth_edge_band,
    depth_metrics,
    edge_aware_chamfer,
    temporal_alignment_error,
)
from pixel_perfect_ros.geometry.poses import position_quaternion_to_pose as pose_from_quaternion

H, W = 96, 128
K = np.array([[100.0, 0.0, 64.0], [0.0, 100.0, 48.0], [0.0, 0.0, 1.0]])
EPS = 1e-5  # the official epsilon
ALL = np.ones((H, W), dtype=bool)


def step_depth(near=2.0, far=4.0, edge_col=W // 2):
    """(H, W) float32 metres: fronto-parallel planes, ``near`` left of ``edge_col``, ``far`` from it on."""
    depth = np.full((H, W), far, dtype=np.float32)
    depth[:, :edge_col] = near
    return depth


def plane_depth(normal, distance):
    """(H, W) float64 depth of the plane ``n . X = distance`` seen through ``K`` (NaN behind the camera)."""
    v, u = np.mgrid[0:H, 0:W]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], axis=-1)
    denom = rays @ np.asarray(normal, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(denom > 1e-9, distance / denom, np.nan)


def box_blur_rows(depth, radius):
    """Horizontal box blur of half-width ``radius`` (edge replicated): ``radius`` px of edge blur."""
    if radius == 0:
        return depth.copy()
    padded = np.pad(depth.astype(np.float64), ((0, 0), (radius, radius)), mode="edge")
    kernel = np.ones(2 * radius + 1) / (2 * radius + 1)
    return np.stack([np.convolve(row, kernel, mode="valid") for row in padded]).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# depth_metrics (official formulas)
# --------------------------------------------------------------------------------------------------

def test_uniform_ten_percent_overestimate():
    gt = step_depth()
    m = depth_metrics(1.1 * gt, gt, ALL)
    # |gt - 1.1 gt| / (gt + eps) = 0.1 gt / (gt + eps): 0.1 up to eps / gt.
    assert m["abs_rel"] == pytest.approx(0.1, abs=1e-6)
    # thresh = 1.1 gt / (gt + eps) ~= 1.1 < sqrt(1.25) = 1.118: every delta is 1.
    assert (m["delta_0_5"], m["delta_1"], m["delta_2"], m["delta_3"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["n_pixels"] == H * W and m["valid_frac"] == 1.0


def test_deltas_count_the_threshold_bands():
    gt = step_depth()
    pred = gt.copy()
    pred[: H // 4] *= 1.2  # 1/4: thresh 1.2, in [1.118, 1.25)
    pred[H // 4 : H // 2] /= 1.5  # 1/4: thresh 1.5, in [1.25, 1.5625)
    pred[H // 2 : 3 * H // 4] *= 1.9  # 1/4: thresh 1.9, in [1.5625, 1.953)
    # last quarter exact
    m = depth_metrics(pred, gt, ALL)
    assert m["delta_0_5"] == 0.25 and m["delta_1"] == 0.5 and m["delta_2"] == 0.75 and m["delta_3"] == 1.0
    # abs_rel = (0.2 + 1/3 + 0.9 + 0) / 4 (up to eps / gt)
    assert m["abs_rel"] == pytest.approx((0.2 + 1.0 / 3.0 + 0.9) / 4.0, abs=1e-5)


def test_two_pixel_hand_example_with_the_official_epsilon():
    gt = np.array([[1.0, 2.0]])
    pred = np.array([[2.0, 1.0]])
    m = depth_metrics(pred, gt, np.ones((1, 2), dtype=bool))
    assert m["abs_rel"] == pytest.approx((1.0 / (1.0 + EPS) + 1.0 / (2.0 + EPS)) / 2.0, rel=1e-12)
    assert m["delta_3"] == 0.0  # thresh ~= 2 > 1.25**3 = 1.953


def test_mask_gt_threshold_and_nonfinite_predictions():
    gt = step_depth()
    pred = gt.copy()
    gt_bad = gt.copy()
    gt_bad[0] = 0.0  # gt <= 1e-3: not evaluated even if the mask says so
    pred[0] = 100.0  # ...so this error is invisible
    pred[1, :32] = np.nan  # no prediction: left out, seen in valid_frac
    mask = ALL.copy()
    mask[2] = False
    pred[2] = 100.0  # masked out
    m = depth_metrics(pred, gt_bad, mask)
    n_gt = (H - 2) * W
    assert m["n_pixels"] == n_gt - 32 and m["valid_frac"] == pytest.approx((n_gt - 32) / n_gt)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-5) and m["delta_1"] == 1.0
    empty = depth_metrics(pred, gt, np.zeros((H, W), dtype=bool))
    assert np.isnan(empty["abs_rel"]) and empty["n_pixels"] == 0


# --------------------------------------------------------------------------------------------------
# aligned_metrics (protocols)
# --------------------------------------------------------------------------------------------------

def test_ransac_log_protocol_recovers_an_exact_log_affine_prediction():
    gt = step_depth()
    gt[20:40, 80:100] = 3.0
    a, b = 1.7, 0.3
    n = ((np.log(gt.astype(np.float64) + 1.0) - b) / a).astype(np.float32)  # PPD-style normalised log depth
    m = aligned_metrics(n, gt, ALL, protocol="ransac_log")
    assert m["abs_rel"] < 1e-5 and m["delta_0_5"] == 1.0


def test_ransac_log_protocol_fits_around_nan_predictions():
    gt = step_depth()
    n = ((np.log(gt.astype(np.float64) + 1.0) - 0.3) / 1.7).astype(np.float32)
    n[::7, ::5] = np.nan  # e.g. removed by the flying-pixel filter
    m = aligned_metrics(n, gt, ALL, protocol="ransac_log")
    assert m["abs_rel"] < 1e-5 and m["valid_frac"] < 1.0


def test_ransac_log_protocol_matches_the_official_fixture(fixtures_dir):
    path = fixtures_dir / "moge2" / "ransac_48x64.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as f:
        pred, gt, mask, official = f["pred"], f["gt"], f["mask"], f["out_pred_metric"]
    assert (gt[mask] > 1e-3).all()  # the evaluation mask equals the fixture's mask
    assert aligned_metrics(pred, gt, mask, protocol="ransac_log", seed=666) == depth_metrics(official, gt, mask)


def test_lsq_disparity_protocol_is_exact_on_an_affine_disparity():
    gt = step_depth()
    pred = 1.0 / ((1.0 / gt.astype(np.float64) - 0.02) / 3.0)  # relative depth, disparity s=3, t=0.02
    m = aligned_metrics(pred, gt, ALL, protocol="lsq_disparity")
    assert m["abs_rel"] < 1e-9 and m["delta_0_5"] == 1.0 and m["valid_frac"] == 1.0


def test_none_protocol_is_plain_depth_metrics_and_unknown_protocol_raises():
    gt = step_depth()
    assert aligned_metrics(1.1 * gt, gt, ALL, protocol="none") == depth_metrics(1.1 * gt, gt, ALL)
    with pytest.raises(ValueError, match="protocol"):
        aligned_metrics(gt, gt, ALL, protocol="median")


# --------------------------------------------------------------------------------------------------
# Edge-aware chamfer distance
# --------------------------------------------------------------------------------------------------

def test_edge_band_of_a_step_is_the_edge_plus_minus_band_px():
    band = depth_edge_band(step_depth(), band_px=3)
    cols = np.flatnonzero(band.any(axis=0))
    assert band.all(axis=0)[cols].all()  # full-height vertical band
    assert len(cols) == 7 and cols.min() <= W // 2 - 1 and cols.max() >= W // 2  # 1 edge column +- 3
    assert not depth_edge_band(plane_depth((0.3, 0.0, 1.0), 2.0), band_px=3).any()  # no depth edge


def test_chamfer_is_zero_for_a_perfect_prediction_and_grows_with_edge_blur():
    gt = step_depth()
    gt[30:60, 90:110] = 3.0  # a box on the far plane
    assert edge_aware_chamfer(gt, gt, K) == 0.0
    values = [edge_aware_chamfer(box_blur_rows(gt, r), gt, K) for r in range(6)]
    assert values[0] == 0.0
    assert all(later > earlier for earlier, later in zip(values, values[1:])), values
    assert values[1] > 0.05  # metres: 1 px of blur strings points 1/3 of the 2 m gap into the air


def test_chamfer_is_in_the_depth_unit_and_symmetric_in_its_definition():
    gt = step_depth()
    pred = box_blur_rows(gt, 2)
    base = edge_aware_chamfer(pred, gt, K)
    # Scaling the whole scene by 2 scales every point and distance by 2 (same band: min-max Canny).
    assert edge_aware_chamfer(2 * pred, 2 * gt, K) == pytest.approx(2 * base, rel=1e-6)
    # log scaling for Canny finds the same single edge here.
    assert edge_aware_chamfer(pred, gt, K, edge_scale="log") == pytest.approx(base)


def test_chamfer_is_nan_without_edges():
    gt = plane_depth((0.0, 0.2, 1.0), 2.0).astype(np.float32)
    assert np.isnan(edge_aware_chamfer(gt, gt, K))


# --------------------------------------------------------------------------------------------------
# Temporal alignment error
# --------------------------------------------------------------------------------------------------

def test_pose_from_quaternion():
    T = pose_from_quaternion([1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(T, [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
    half = np.sqrt(0.5)
    T = pose_from_quaternion([0.0, 0.0, 0.0], [2 * half, 0.0, 0.0, 2 * half])  # 90 deg about z, unnormalised
    np.testing.assert_allclose(T[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    with pytest.raises(ValueError):
        pose_from_quaternion([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])


def fronto_parallel_clip(n_frames=4, depth_m=3.0):
    """Camera translating in x and z and rolling about its optical axis in front of a wall z = depth_m.

    Every frame sees a constant depth ``depth_m - z_cam``: exactly consistent depths and poses.
    """
    poses, depths = [], []
    for t in range(n_frames):
        angle = 0.05 * t
        T = pose_from_quaternion([0.1 * t, 0.0, 0.2 * t], [np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])
        poses.append(T)
        depths.append(np.full((H, W), depth_m - 0.2 * t, dtype=np.float32))
    return np.stack(depths), np.stack(poses)


def test_tae_is_zero_for_consistent_depths_and_poses():
    depths, poses = fronto_parallel_clip()
    assert temporal_alignment_error(depths, poses, K) == pytest.approx(0.0, abs=1e-6)  # float32 depths


def test_tae_equals_the_hand_value_for_a_scale_drift():
    # Wall at 3 m, camera sliding sideways: frame t predicted as 3 * (1 + eps * t).
    eps, n_frames = 0.02, 4
    poses = np.stack([pose_from_quaternion([0.05 * t, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]) for t in range(n_frames)])
    scales = 1.0 + eps * np.arange(n_frames)
    depths = np.stack([np.full((H, W), 3.0 * s) for s in scales])
    # t -> t+1: |3 s_{t+1} - 3 s_t| / (3 s_{t+1}) = eps / s_{t+1}; t+1 -> t: eps / s_t.
    expected = np.mean([(eps / scales[t + 1] + eps / scales[t]) / 2 for t in range(n_frames - 1)])
    assert temporal_alignment_error(depths, poses, K) == pytest.approx(expected, rel=1e-12)


def test_tae_grows_with_scale_drift_on_a_general_scene():
    # Tilted wall with a box, general motion: rounding to pixels leaves a small error without drift.
    n_frames = 3
    normal = np.array([0.2, -0.1, 1.0]) / np.linalg.norm([0.2, -0.1, 1.0])
    poses = []
    for t in range(n_frames):
        angle = 0.02 * t
        poses.append(pose_from_quaternion([0.05 * t, 0.02 * t, 0.03 * t], [np.cos(angle / 2), np.sin(angle / 2), 0, 0]))
    poses = np.stack(poses)
    depths = []
    for T in poses:  # the wall n . X_world = 4 seen from each camera: n_cam . X_cam = 4 - n . t
        depths.append(plane_depth(T[:3, :3].T @ normal, 4.0 - normal @ T[:3, 3]))
    depths = np.stack(depths)
    base = temporal_alignment_error(depths, poses, K)
    assert base < 2e-3
    drifts = [temporal_alignment_error(depths * (1.0 + d * np.arange(n_frames))[:, None, None], poses, K)
              for d in (0.01, 0.03, 0.1)]
    assert base < drifts[0] < drifts[1] < drifts[2]


def test_tae_masks_select_destination_pixels():
    # Static camera: every pixel maps onto itself. Frame 1 is wrong in rows 0..9; as in VDA the
    # masks select the scored destination pixels, so masking those rows in both frames hides it.
    depths = np.full((2, H, W), 3.0)
    depths[1, :10] = 99.0
    poses = np.stack([np.eye(4), np.eye(4)])
    masks = np.ones(depths.shape, dtype=bool)
    masks[:, :10] = False
    assert temporal_alignment_error(depths, poses, K, masks) == 0.0
    # Unmasked: rows 0..9 of both directions have AbsRel 96/3 (1 -> 0) and 96/99 (0 -> 1).
    expected = 10 / H * (96.0 / 3.0 + 96.0 / 99.0) / 2
    assert temporal_alignment_error(depths, poses, K) == pytest.approx(expected, rel=1e-12)


def test_tae_rejects_bad_shapes():
    depths, poses = fronto_parallel_clip(n_frames=2)
    with pytest.raises(ValueError):
        temporal_alignment_error(depths[:1], poses[:1], K)
    with pytest.raises(ValueError):
        temporal_alignment_error(depths, poses[:1], K)
