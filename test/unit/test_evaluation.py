"""Sequence evaluation (evaluation/sequence.py): metric values on hand-made depth maps, summaries, report files."""
import csv
import json
import math

import numpy as np
import pytest

from pixel_perfect_ros.evaluation.sequence import Evaluation, write_aggregate_report

H, W = 48, 64
K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
RGB = np.full((H, W, 3), 128, np.uint8)


def step_depth() -> np.ndarray:
    """(H, W) float32 metres: 2 m left of the middle column, 4 m from it on."""
    depth = np.full((H, W), 4.0, np.float32)
    depth[:, : W // 2] = 2.0
    return depth


def test_a_perfect_metric_prediction_scores_zero_error_in_every_protocol():
    gt = step_depth()
    frame = Evaluation("t").add(0, RGB, gt, K, gt.copy(), is_metric=True)
    for protocol in ("ransac_log", "lsq_disparity", "none"):
        assert frame[f"{protocol}.abs_rel"] == pytest.approx(0.0, abs=1e-5), protocol
        assert frame[f"{protocol}.delta_1"] == 1.0
        assert frame[f"{protocol}.valid_frac"] == 1.0
    assert frame["chamfer_ransac_m"] == pytest.approx(0.0, abs=1e-5)
    assert frame["chamfer_metric_m"] == pytest.approx(0.0, abs=1e-5)


def test_a_2x_scaled_prediction_is_perfect_after_alignment_and_100_percent_off_without():
    gt = step_depth()
    frame = Evaluation("t").add(0, RGB, gt, K, 2.0 * gt, is_metric=True)
    # two depth levels: log(1 + 2 gt) is affine in log(1 + gt) on them, and 1 / (2 gt) in 1 / gt
    assert frame["ransac_log.abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert frame["lsq_disparity.abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert frame["none.abs_rel"] == pytest.approx(1.0, abs=1e-4)  # |2 g - g| / g
    assert frame["none.delta_3"] == 0.0  # ratio 2 > 1.25^3 = 1.95: no pixel within any threshold
    assert frame["chamfer_metric_m"] > 1.0


def test_a_hand_computed_partial_error():
    gt = step_depth()
    depth = gt.copy()
    depth[: H // 2] *= 1.1  # the top half 10 % too far
    frame = Evaluation("t").add(0, RGB, gt, K, depth, is_metric=True)
    assert frame["none.abs_rel"] == pytest.approx(0.05, abs=1e-5)  # half the pixels at 0.1
    assert frame["none.delta_0_5"] == 1.0  # 1.1 < sqrt(1.25) = 1.118
    depth[: H // 2] = gt[: H // 2] * 1.2  # now above sqrt(1.25), below 1.25
    frame = Evaluation("t").add(0, RGB, gt, K, depth, is_metric=True)
    assert frame["none.delta_0_5"] == pytest.approx(0.5)
    assert frame["none.delta_1"] == 1.0


def test_relative_depth_is_fitted_in_log_space_and_has_no_unaligned_score():
    gt = np.tile(np.linspace(1.0, 6.0, W, dtype=np.float32), (H, 1))  # a smooth ramp, metres
    n = 0.6 * np.log1p(gt) - 0.3  # the model's output: affine in log(1 + depth)
    frame = Evaluation("t").add(0, RGB, gt, K, np.exp(n), is_metric=False)  # relative mode publishes exp(n)
    assert frame["ransac_log.abs_rel"] == pytest.approx(0.0, abs=1e-4)
    assert frame["lsq_disparity.abs_rel"] > 0.01  # exp(n) is not affine in disparity
    assert "none.abs_rel" not in frame and "chamfer_metric_m" not in frame


@pytest.mark.parametrize("factor", [2, 0.5])
def test_ground_truth_at_another_resolution(factor):
    gt = step_depth()
    gt_other = np.repeat(np.repeat(gt, 2, 0), 2, 1) if factor == 2 else gt[::2, ::2].copy()
    evaluation = Evaluation("t")
    frame = evaluation.add(0, RGB, gt_other, K, 2.0 * gt, is_metric=True)
    assert frame["none.abs_rel"] == pytest.approx(1.0, abs=1e-4)
    assert frame["none.valid_frac"] == 1.0
    assert frame["lsq_disparity.abs_rel"] == pytest.approx(0.0, abs=1e-5)
    same = Evaluation("t").add(0, RGB, gt_other, K, gt.copy(), is_metric=True)
    assert same["chamfer_metric_m"] == pytest.approx(0.0, abs=1e-5)  # K scaled with the depth


def test_frames_without_ground_truth_are_counted_not_scored():
    evaluation = Evaluation("t")
    gt = step_depth()
    evaluation.add(0, RGB, gt, K, gt.copy(), is_metric=True, timings_ms={"a_ms": 1.0, "b_ms": 2.0})
    frame = evaluation.add(100_000_000, RGB, None, K, gt.copy(), is_metric=True, timings_ms={"a_ms": 3.0, "b_ms": 4.0})
    assert frame["scored"] is False and "none.abs_rel" not in frame and frame["time_s"] == pytest.approx(0.1)
    summary = evaluation.summary()
    assert summary["frames"] == {"total": 2, "scored": 1, "unscored": 1, "metric": 2}
    assert summary["metrics"]["none.abs_rel"]["count"] == 1
    assert summary["metrics"]["total_ms"] == {"mean": 5.0, "median": 5.0, "count": 2}
    assert summary["headline"] == "none"


def translated_wall(depth_m: float) -> np.ndarray:
    return np.full((H, W), depth_m, np.float32)


def test_temporal_alignment_error_only_with_poses():
    without = Evaluation("t")
    for i in range(3):
        without.add(i, RGB, step_depth(), K, step_depth(), is_metric=True)
    assert without.summary()["tae"] is None

    # The camera moves 1 m towards a wall 4 m away; the prediction is twice the depth in both frames.
    poses = [np.eye(4), np.eye(4)]
    poses[1][2, 3] = 1.0  # T_world_from_cam of frame 1: 1 m forward along z
    evaluation = Evaluation("t")
    for i, (gt_m, pose) in enumerate(zip((4.0, 3.0), poses)):
        evaluation.add(i, RGB, translated_wall(gt_m), K, translated_wall(2 * gt_m), is_metric=True, pose=pose)
    tae = evaluation.summary()["tae"]
    assert tae["frames"] == 2
    assert tae["tae"] == pytest.approx(0.0, abs=1e-6)  # the clip's disparity scale undoes the 2x
    # as published: 8 m warped 1 m forward is 7 m against 6 m (1/6), 6 m warped back is 7 m against 8 m (1/8)
    assert tae["tae_metric"] == pytest.approx((1 / 6 + 1 / 8) / 2, abs=1e-6)


def test_report_files(tmp_path):
    evaluation = Evaluation("synthetic")
    gt = step_depth()
    for i in range(4):
        evaluation.add(i * 100_000_000, RGB, gt, K, gt * (1 + 0.1 * i), is_metric=True, timings_ms={"model_ms": 5.0})
    evaluation.add(500_000_000, RGB, None, K, gt, is_metric=True, timings_ms={"model_ms": 5.0})
    summary = evaluation.write(tmp_path / "a", complete=False, notes={"model": "bundled", "bag": "b"})
    assert summary["frames"]["total"] == 5

    page = (tmp_path / "a" / "report.html").read_text()
    assert "INCOMPLETE" in page and "bundled" in page and page.count("data:image/png;base64,") == 5  # plots,
    # 3 strips, cloud
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["complete"] is False and saved["notes"]["model"] == "bundled" and len(saved["frames"]) == 5
    assert saved["summary"]["metrics"]["none.abs_rel"]["mean"] == pytest.approx(0.15, abs=1e-4)  # 0, .1, .2, .3
    with open(tmp_path / "a" / "frames.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 5 and rows[4]["scored"] == "False" and rows[4]["none.abs_rel"] == ""
    assert float(rows[1]["none.abs_rel"]) == pytest.approx(0.1, abs=1e-4)

    evaluation.write(tmp_path / "b")
    assert "INCOMPLETE" not in (tmp_path / "b" / "report.html").read_text()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["complete"] is True


def test_an_empty_sequence_still_writes_a_report(tmp_path):
    summary = Evaluation("nothing").write(tmp_path, complete=False)
    assert summary["frames"]["total"] == 0 and summary["tae"] is None
    assert (tmp_path / "report.html").is_file() and (tmp_path / "frames.csv").is_file()


def test_aggregate_report_weights_means_by_frames(tmp_path):
    gt = step_depth()
    doubled, perfect = Evaluation("a"), Evaluation("b")
    doubled.add(0, RGB, gt, K, 2.0 * gt, is_metric=True)
    for i in range(3):
        perfect.add(i, RGB, gt, K, gt.copy(), is_metric=True)
    bags = [{"name": "bag_a", "status": "ok", "message": "", "summary": doubled.summary(), "report": "bag_a/report.html"},
            {"name": "bag_b", "status": "ok", "message": "", "summary": perfect.summary(), "report": "bag_b/report.html"},
            {"name": "bag_c", "status": "failed", "message": "no topic '/x'", "summary": None, "report": None}]
    aggregate = write_aggregate_report(tmp_path / "report.html", "three bags", bags)
    assert aggregate["frames"]["scored"] == 4
    assert aggregate["metrics"]["none.abs_rel"]["mean"] == pytest.approx(0.25, abs=1e-4)  # (1.0 + 3 x 0) / 4
    assert math.isnan(aggregate["metrics"]["none.abs_rel"]["median"])
    page = (tmp_path / "report.html").read_text()
    for text in ('href="bag_a/report.html"', 'href="bag_b/report.html"', "no topic &#x27;/x&#x27;", "INCOMPLETE"):
        assert text in page, text
