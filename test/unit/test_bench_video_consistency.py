"""The temporal-consistency benchmark: flicker and cut recovery (geometry/metrics.py), the clip scores
(evaluation/temporal.py) on constructed predictions, and a ``--smoke`` run of tools/bench_video_consistency.py
on tiny random models (table rows, JSON keys, counted DiT passes; no timing asserted)."""
import json

import numpy as np
import pytest
from checkpoint_files import write_video_checkpoints

from pixel_perfect_ros.evaluation.temporal import ClipScores, recovery_frames, score_clip, shot_tae
from pixel_perfect_ros.geometry.metrics import cut_recovery, flicker, temporal_alignment_error
from pixel_perfect_ros.synthetic.clips import make_clip
from pixel_perfect_ros.tools import bench_video_consistency


@pytest.fixture(scope="module")
def clip():
    """6 frames 32x24, a cut at 3."""
    return make_clip(1000, 6, 24, 32, (3,))


def _slow_gt(frames=5):
    """(T, 4, 6) depth: the left half changes by 0.5 % a frame (stable), the right half by 5 %."""
    gt = np.full((frames, 4, 6), 2.0)
    for t in range(frames):
        gt[t, :, :3] *= 1.005 ** t
        gt[t, :, 3:] *= 1.05 ** t
    return gt


# ------------------------------------------------------------------------------------------------
# flicker
# ------------------------------------------------------------------------------------------------

def test_flicker_is_zero_for_a_perfect_and_a_constant_offset_prediction():
    gt = _slow_gt()
    assert flicker(gt, gt) == 0.0
    assert flicker(gt + 0.3, gt) == pytest.approx(0.0, abs=1e-12)


def test_flicker_measures_jitter_relative_to_the_true_depth():
    gt = _slow_gt()
    jittered = gt + 0.02 * np.array([0, 1, 0, 1, 0])[:, None, None]  # +-2 cm every other frame
    # stable pixels only (left half): |change - true change| = 0.02 per pair, over gt_(t-1)
    expected = np.mean([0.02 / gt[t - 1, 0, 0] for t in range(1, 5)])
    assert flicker(jittered, gt) == pytest.approx(expected)


def test_flicker_skips_changing_pixels_cut_pairs_and_invalid_pixels():
    gt = _slow_gt()
    wrong_where_moving = gt.copy()
    wrong_where_moving[:, :, 3:] *= np.array([1, 2, 1, 2, 1])[:, None, None]
    assert flicker(wrong_where_moving, gt) == 0.0  # the right half's truth changes by 5 %: not scored
    jump_at_cut = gt.copy()
    jump_at_cut[3:] += 1.0
    assert flicker(jump_at_cut, gt) > 0
    assert flicker(jump_at_cut, gt, cuts=(3,)) == pytest.approx(0.0, abs=1e-12)
    nan_pred = gt.copy()
    nan_pred[2] = np.nan
    assert flicker(nan_pred, gt) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(flicker(gt[:1], gt[:1]))
    with pytest.raises(ValueError):
        flicker(gt[0], gt[0])


# ------------------------------------------------------------------------------------------------
# recovery after cuts
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("errors, cuts, expected", [
    ([1, 1, 1, 1, 3, 2, 1.05, 1], (4,), [2]),  # level 1: back within 1.1 two frames after the cut
    ([1, 1, 1, 1, 1.1, 2], (4,), [0]),  # the cut frame itself is within 10 %
    ([1, 1, 3, 3, 3], (2,), [3]),  # never: the frames to the end
    ([1, 1, 3, 1, 5, 5, 1], (2, 4), [1, 2]),  # second level: frames 2, 3 only (mean 2), searched to the end
    ([9, 1, 1, 1, 3, 1], (4,), [1]),  # only the 2 frames before the cut set the level (before=2)
    ([1, np.nan, 1, 3, np.nan, 1], (3,), [2]),  # NaN: not in the level, never recovered
])
def test_cut_recovery_counts_frames_on_constructed_series(errors, cuts, expected):
    before = 2 if errors[0] == 9 else 8
    assert cut_recovery(errors, cuts, before=before) == expected


@pytest.mark.parametrize("cuts", [(0,), (5,), (3, 2)])
def test_cut_recovery_rejects_bad_cuts(cuts):
    with pytest.raises(ValueError):
        cut_recovery(np.ones(5), cuts)


def test_recovery_is_relative_to_the_reference_rows_per_frame_error():
    hard_room = ClipScores(0, 0, 0, 0, np.array([0.1, 0.1, 0.2, 0.2, 0.2]))  # per-frame PPD: second room harder
    video = ClipScores(0, 0, 0, 0, np.array([0.05, 0.05, 0.3, 0.1, 0.1]))
    assert recovery_frames(video, hard_room, (2,)) == [1]  # ratio 0.5, 1.5, 0.5, 0.5
    assert cut_recovery(video.frame_abs_rel, (2,)) == [3]  # raw AbsRel never returns to 0.05


# ------------------------------------------------------------------------------------------------
# clip scores: one alignment per clip
# ------------------------------------------------------------------------------------------------

def test_a_consistent_prediction_scores_zero_after_one_fit_per_clip(clip):
    log_depth = 0.7 * np.log1p(clip.depth) - 0.2  # one affine map of log(1 + d) for the whole clip
    scores = score_clip(log_depth, clip.depth, clip.T_world_from_cam, clip.K, clip.cuts)
    assert scores.abs_rel < 1e-5 and scores.delta_1 == 1.0
    assert scores.flicker < 1e-5
    assert np.all(scores.frame_abs_rel < 1e-5)
    assert scores.tae == pytest.approx(shot_tae(clip.depth, clip.depth, clip.T_world_from_cam, clip.K, clip.cuts),
                                       abs=1e-4)


def test_a_scale_drifting_prediction_is_penalised_per_clip_not_per_frame(clip):
    scale = np.linspace(0.6, 1.4, len(clip.depth))[:, None, None]  # a different affine map per frame
    drifting = scale * np.log1p(clip.depth)
    scores = score_clip(drifting, clip.depth, clip.T_world_from_cam, clip.K, clip.cuts)
    consistent = score_clip(np.log1p(clip.depth), clip.depth, clip.T_world_from_cam, clip.K, clip.cuts)
    assert np.all(scores.frame_abs_rel < 1e-5)  # each frame alone is perfect
    assert scores.abs_rel > 0.05 and scores.tae > consistent.tae + 0.02 and scores.flicker > 0.01


def test_shot_tae_averages_the_pairs_inside_shots_only(clip):
    depth = clip.depth * np.array([1, 1.1, 1, 1, 1.2, 1])[:, None, None]
    pairs_first = 2 * temporal_alignment_error(depth[:3], clip.T_world_from_cam[:3], clip.K)
    pairs_second = 2 * temporal_alignment_error(depth[3:], clip.T_world_from_cam[3:], clip.K)
    assert shot_tae(depth, clip.depth, clip.T_world_from_cam, clip.K, (3,)) == pytest.approx(
        (pairs_first + pairs_second) / 4)
    assert np.isnan(shot_tae(depth[:2], clip.depth[:2], clip.T_world_from_cam[:2], clip.K, (1,)))


# ------------------------------------------------------------------------------------------------
# the tool
# ------------------------------------------------------------------------------------------------

def test_clips_are_cached_and_every_other_one_is_cut(tmp_path):
    assert [bench_video_consistency.clip_cuts(i, 48) for i in range(3)] == [(), (24,), ()]
    first = bench_video_consistency.load_clip(1001, 4, 16, 16, (2,), tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = bench_video_consistency.load_clip(1001, 4, 16, 16, (2,), tmp_path)
    assert again.cuts == (2,) and np.array_equal(again.rgb, first.rgb) and np.array_equal(again.depth, first.depth)
    assert np.array_equal(again.T_world_from_cam, first.T_world_from_cam)


def test_seeds_without_a_camera_path_are_skipped(monkeypatch):
    def fake_make_clip(seed, frames, height, width, cuts):
        if seed == 1001:
            raise RuntimeError("no collision-free camera arc found")
        return seed, cuts

    monkeypatch.setattr(bench_video_consistency, "make_clip", fake_make_clip)
    clips = list(bench_video_consistency.held_out_clips(3, 8, 16, 16, None))
    assert clips == [(1000, (1000, ())), (1002, (1002, (4,))), (1003, (1003, ()))]


def test_missing_video_files_exit_2(tmp_path, capsys):
    assert bench_video_consistency.main(["--smoke", "--checkpoint", str(tmp_path / "ppvd.pth"),
                                         "--semantics", str(tmp_path / "pi3.safetensors")]) == 2
    assert "ppvd.pth" in capsys.readouterr().err


def test_smoke_run_prints_every_row_and_writes_the_json(tmp_path, capsys):
    ppvd, pi3 = write_video_checkpoints(tmp_path)
    out = tmp_path / "result.json"
    assert bench_video_consistency.main(["--smoke", "--steps", "1", "--max-scale-jump", "1e9", "--checkpoint",
                                         str(ppvd), "--semantics", str(pi3), "--cache", str(tmp_path / "clips"),
                                         "--json", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in printed.splitlines() if line.startswith("| ")]
    assert rows[0][:5] == ["mode", "K", "AbsRel", "delta1", "TAE"]
    assert [tuple(row[:2]) for row in rows[1:]] == [
        ("ppd (per frame)", "-"), ("window", "13"), ("stream_exact", "1"), ("stream_exact", "4"),
        ("stream_cached", "1"), ("stream_cached", "4")]
    assert all(len(row) == len(rows[0]) for row in rows[1:])
    targets = [line for line in printed.splitlines() if line.startswith("target on TAE ")]
    assert [line.split(":")[0] for line in targets] == ["target on TAE means"] * 2 + ["target on TAE medians"] * 2
    assert len(list((tmp_path / "clips").glob("*.npz"))) == 2

    result = json.loads(out.read_text())
    assert set(result) == {"command", "date", "machine", "device", "threads", "image_model", "video_model",
                           "settings", "rows", "targets"}
    assert result["settings"]["frames"] == 16 and result["settings"]["size"] == [64, 48]
    assert set(result["targets"]) == {"means", "medians"}
    assert set(result["targets"]["medians"]) == {"statistic", "video_tae_vs_per_frame", "stream_cached_k1"}
    per_frame, window, exact1, _, cached1, _ = result["rows"]
    for row in result["rows"]:
        assert {"abs_rel", "delta_1", "tae", "tae_median", "flicker", "recovery_frames", "dit_passes_per_frame",
                "dit_passes_per_frame_steady", "ms_per_frame", "reanchors"} <= set(row)
        assert [clip["seed"] for clip in row["clips"]] == [1000, 1001]
        assert [clip["cuts"] for clip in row["clips"]] == [[], [8]]
        assert all(len(clip["frame_abs_rel"]) == 16 for clip in row["clips"])
    assert per_frame["recovery_frames"] is None and per_frame["dit_passes_per_frame"] == 1.0
    assert [clip["recovery_frames"] for clip in cached1["clips"]][0] == []
    assert len(cached1["clips"][1]["recovery_frames"]) == 1
    # counted DiT frames per Euler step: one 16-frame window; exact K = 1: 3 refs + 1 new per frame once
    # ready; cached K = 1: 13 new frames and 2 reference passes of 3 (anchor set, keyframe 8), after a
    # filling of 3 official 16-frame windows
    assert window["dit_passes_per_frame"] == 1.0 and exact1["dit_passes_per_frame_steady"] == 4.0
    assert cached1["dit_passes_per_frame_steady"] == pytest.approx(19 / 13)
    assert cached1["dit_passes_per_frame"] == pytest.approx((48 + 19) / 16)
    assert cached1["reanchors"] == 0
