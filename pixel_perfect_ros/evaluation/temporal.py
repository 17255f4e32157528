"""Temporal consistency of a predicted depth clip against ground truth (numpy; no ROS).

The scores of the video-mode benchmark (``tools/bench_video_consistency.py``), for any clip of the models'
normalised log-depth ``n`` with exact depth, poses and intrinsics, possibly cut into shots (a cut starts
another scene):

- accuracy after ONE alignment per clip: PPD's official RANSAC fit ``log(1 + gt) = a n + b``
  (``recover_metric_depth_ransac``) on all frames together, so a scale that drifts between frames costs;
  in ``log(1 + d)`` space because the video modes chain their windows with an affine map of ``n``, which
  that fit undoes exactly (a least-squares fit in disparity, the video-depth papers' space, would not);
- TAE (``temporal_alignment_error``) of that clip-aligned depth, inside each shot (two shots' poses are in
  different worlds), and ``flicker`` of it;
- AbsRel per frame after the same fit per frame (PPD's official per-image protocol), the series that
  ``recovery_frames`` reads after each cut.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.alignment import recover_metric_depth_ransac
from ..geometry.metrics import (GT_MIN_DEPTH_M, aligned_metrics, cut_recovery, depth_metrics, flicker,
                                temporal_alignment_error)


@dataclass(frozen=True)
class ClipScores:
    """A clip's scores; fractions, not percent.

    Attributes:
        abs_rel, delta_1: over every GT pixel of every frame after one alignment for the clip.
        tae: temporal alignment error of the clip-aligned depth, mean over the directed frame pairs inside
            shots (NaN when no shot has 2 frames).
        flicker: ``geometry.metrics.flicker`` of the clip-aligned depth (pairs across a cut skipped).
        frame_abs_rel: (T,) AbsRel of every frame aligned on its own.
    """

    abs_rel: float
    delta_1: float
    tae: float
    flicker: float
    frame_abs_rel: np.ndarray


def valid_gt(gt: np.ndarray) -> np.ndarray:
    """Pixels with ground truth (the official mask ``gt > 1e-3``; NaN excluded): bool, ``gt``'s shape."""
    with np.errstate(invalid="ignore"):
        return gt > GT_MIN_DEPTH_M


def align_clip(log_depth: np.ndarray, gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """(T, H, W) normalised log-depth -> (T, H, W) float32 metres by one RANSAC fit in ``log(1 + d)`` over
    the whole clip (``recover_metric_depth_ransac``, seeded), clipped to [1 mm, max GT]."""
    return recover_metric_depth_ransac(log_depth, gt, valid_gt(gt) & np.isfinite(log_depth), seed=seed)


def shots(num_frames: int, cuts: tuple[int, ...]) -> list[slice]:
    """The frame ranges of the shots of a clip of ``num_frames`` frames cut at ``cuts`` (ascending)."""
    bounds = [0, *cuts, num_frames]
    return [slice(start, end) for start, end in zip(bounds[:-1], bounds[1:])]


def shot_tae(depth: np.ndarray, gt: np.ndarray, poses: np.ndarray, K: np.ndarray, cuts: tuple[int, ...]) -> float:
    """TAE of (T, H, W) depth (metres) over the frame pairs inside shots, each shot's pairs weighted by
    their number (= the mean over all such pairs); scored on GT pixels. NaN when no shot has 2 frames.

    Args:
        depth, gt: (T, H, W) metres. poses: (T, 4, 4) ``T_world_from_cam`` (per shot's world). K: (3, 3).
    """
    total, pairs = 0.0, 0
    for shot in shots(len(depth), cuts):
        count = shot.stop - shot.start - 1
        if count > 0:
            total += count * temporal_alignment_error(depth[shot], poses[shot], K, valid_gt(gt[shot]))
            pairs += count
    return total / pairs if pairs else float("nan")


def frame_abs_rel(log_depth: np.ndarray, gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """(T,) AbsRel of each frame of (T, H, W) normalised log-depth after its own RANSAC fit (``ransac_log``)."""
    return np.array([aligned_metrics(n, g, valid_gt(g), "ransac_log", seed)["abs_rel"]
                     for n, g in zip(log_depth, gt)])


def score_clip(log_depth: np.ndarray, gt: np.ndarray, poses: np.ndarray, K: np.ndarray, cuts: tuple[int, ...],
               seed: int = 0) -> ClipScores:
    """Score a predicted clip (see the module docstring).

    Args:
        log_depth: (T, H, W) normalised log-depth (larger = farther), the prediction at the GT's resolution.
        gt: (T, H, W) metres; NaN or <= 1e-3 = no ground truth.
        poses: (T, 4, 4) ``T_world_from_cam``. K: (3, 3) intrinsics, pixels.
        cuts: frames where a new shot starts, ascending in (0, T).
        seed: RANSAC seed.
    """
    aligned = align_clip(log_depth, gt, seed)
    accuracy = depth_metrics(aligned, gt, valid_gt(gt))
    return ClipScores(accuracy["abs_rel"], accuracy["delta_1"], shot_tae(aligned, gt, poses, K, cuts),
                      flicker(aligned, gt, cuts), frame_abs_rel(log_depth, gt, seed))


def recovery_frames(scores: ClipScores, reference: ClipScores, cuts: tuple[int, ...]) -> list[int]:
    """Per cut: frames until ``scores``' per-frame AbsRel, relative to ``reference``'s on the same frames
    (per-frame PPD: how hard each frame is), is back within 10 % of its level before the cut
    (``cut_recovery``; never = frames to the next cut or the end). The ratio keeps the new scene's own
    difficulty out of the count."""
    return cut_recovery(scores.frame_abs_rel / reference.frame_abs_rel, cuts)
