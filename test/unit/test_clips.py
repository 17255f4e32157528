"""Synthetic clips: shots, cuts, determinism."""
import numpy as np
import pytest

from pixel_perfect_ros.synthetic import make_clip


def test_a_clip_is_deterministic_smooth_within_a_shot_and_changes_room_at_a_cut():
    clip = make_clip(seed=7, n_frames=32, height=24, width=32, cuts=(16,), supersample=1)
    again = make_clip(seed=7, n_frames=32, height=24, width=32, cuts=(16,), supersample=1)
    np.testing.assert_array_equal(clip.rgb, again.rgb)
    assert clip.rgb.shape == (32, 24, 32, 3) and clip.depth.shape == (32, 24, 32) and clip.cuts == (16,)
    assert np.isfinite(clip.depth).mean() > 0.99
    change = [float(np.nanmedian(np.abs(np.log(clip.depth[i + 1] / clip.depth[i])))) for i in range(31)]
    assert change[15] > 3 * max(change[:15] + change[16:])  # the cut is the largest change by far
    moved = [np.linalg.norm(clip.T_world_from_cam[i + 1, :3, 3] - clip.T_world_from_cam[i, :3, 3]) for i in range(15)]
    assert min(moved) > 0  # the camera moves


@pytest.mark.parametrize("cuts", [(0,), (8,), (5, 3)])
def test_cuts_outside_the_clip_or_unordered_are_refused(cuts):
    with pytest.raises(ValueError, match="cuts"):
        make_clip(seed=0, n_frames=8, height=8, width=8, cuts=cuts)
