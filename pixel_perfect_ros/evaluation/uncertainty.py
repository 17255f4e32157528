"""Does the spread of PPD's diffusion samples predict its depth error? Scores of one image with ground truth.

For the N samples of an image (normalised log-depth) and its true depth:

1. the mean of the samples is aligned to the truth with the official RANSAC fit in ``log(1 + d)``, and
   every sample is decoded with that same fit (``alignment.ransac_metric_decoder``), as the node decodes
   them with its one fit per frame;
2. the error is ``|depth - truth|`` (metres) per pixel of valid truth; the uncertainty is the samples'
   spread (``uncertainty.sample_spread``, metres);
3. rankings of the pixels compared on that error: the spread, a random order, and the image-gradient
   magnitude (a free baseline: errors gather at edges): AUSE and the sparsification curves (with the
   oracle's, the error itself), Spearman correlation;
4. cleaning the cloud at equal fractions of removed pixels: the edge-aware chamfer distance after
   removing the most uncertain pixels (relative spread), after the flying-pixel filter (its threshold set
   to remove that fraction), and after both (half the fraction each).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry.alignment import ransac_metric_decoder
from ..geometry.filters import flying_pixel_mask
from ..geometry.metrics import GT_MIN_DEPTH_M, edge_aware_chamfer
from ..geometry.uncertainty import (
    ause,
    relative_spread,
    sample_spread,
    sparsification_curve,
    spearman,
)

RANKINGS = ("spread", "gradient", "random")
"""Pixel orderings scored against the error: the samples' spread, the image gradient, chance."""
CLEANINGS = ("uncertainty", "flying_pixel", "both")
"""Ways of removing pixels compared by the edge-aware chamfer distance."""
REMOVED_FRACTIONS = (0.02, 0.05, 0.1)
"""Fractions of the valid pixels removed for the chamfer comparison."""


@dataclass
class ImageScores:
    """Uncertainty scores of one image.

    Attributes:
        ause: ranking (``RANKINGS``) -> AUSE against the absolute error, metres.
        spearman: ranking ("spread", "gradient") -> Spearman correlation with the absolute error.
        curves: ranking and "oracle" -> sparsification curve (``uncertainty.SPARSIFICATION_FRACTIONS``),
            metres.
        chamfer: cleaning (``CLEANINGS``) -> chamfer distance (metres) per removed fraction
            (``REMOVED_FRACTIONS``), and "none": the chamfer distance of the uncleaned depth.
        abs_error_m: mean absolute error of the aligned mean depth, metres.
    """

    ause: dict[str, float]
    spearman: dict[str, float]
    curves: dict[str, np.ndarray]
    chamfer: dict[str, list[float]]
    abs_error_m: float


def image_gradient(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 Sobel gradient magnitude of the (H, W, 3) uint8 image's grey level."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))


def most(score: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """(H, W) bool: the ``count`` pixels among ``candidates`` of highest ``score`` (none for count <= 0)."""
    order = np.argsort(-np.where(candidates, score, -np.inf), axis=None, kind="stable")[:max(0, count)]
    mask = np.zeros(score.size, bool)
    mask[order] = True
    return mask.reshape(score.shape) & candidates


def flying_pixel_threshold_for(depth: np.ndarray, fraction: float, iterations: int = 30) -> float:
    """The flying-pixel filter's relative threshold that removes about ``fraction`` of ``depth``'s valid
    pixels (bisection in log space; the filter removes fewer pixels as the threshold grows)."""
    valid = np.isfinite(depth)
    low, high = np.log(1e-4), np.log(10.0)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        removed = (flying_pixel_mask(depth, float(np.exp(middle))) & valid).sum() / valid.sum()
        low, high = (middle, high) if removed > fraction else (low, middle)
    return float(np.exp(high))


def cleaned_depth(depth: np.ndarray, remove: np.ndarray) -> np.ndarray:
    """``depth`` with the ``remove`` pixels set to NaN (a copy)."""
    return np.where(remove, np.nan, depth).astype(np.float32)


def cleaning_masks(depth: np.ndarray, spread: np.ndarray, fraction: float) -> dict[str, np.ndarray]:
    """The pixels each of ``CLEANINGS`` removes to take away ``fraction`` of the valid ones: the most
    uncertain (relative spread); the flying-pixel filter at the threshold removing about that many; the
    filter at half of it, then the most uncertain of the rest up to the same count."""
    valid = np.isfinite(depth)
    count = int(round(fraction * valid.sum()))
    relative = np.nan_to_num(relative_spread(spread, depth), nan=-np.inf)
    flying_half = flying_pixel_mask(depth, flying_pixel_threshold_for(depth, fraction / 2)) & valid
    return {"uncertainty": most(relative, valid, count),
            "flying_pixel": flying_pixel_mask(depth, flying_pixel_threshold_for(depth, fraction)) & valid,
            "both": flying_half | most(relative, valid & ~flying_half, count - int(flying_half.sum()))}


def score_samples(samples: np.ndarray, rgb: np.ndarray, gt: np.ndarray, K: np.ndarray, seed: int = 0,
                  removed_fractions: Sequence[float] = REMOVED_FRACTIONS) -> ImageScores:
    """The scores of one image (see the module docstring).

    Args:
        samples: (N >= 2, H, W) normalised log-depth samples of the image.
        rgb: (H, W, 3) uint8 image.
        gt: (H, W) true depth, metres; NaN or <= 1e-3 = none.
        K: (3, 3) intrinsics of (H, W), pixels.
        seed: seed of the random ranking (and of the RANSAC fit's sampling).
        removed_fractions: fractions of the valid pixels removed for the chamfer comparison.
    """
    mask = np.isfinite(gt) & (gt > GT_MIN_DEPTH_M)
    decode = ransac_metric_decoder(samples.mean(axis=0), gt, mask, seed=seed)
    depth = decode(samples.mean(axis=0))
    spread = sample_spread(decode, samples)
    error = np.where(mask, np.abs(depth - gt), np.nan)
    rankings = {"spread": spread, "gradient": image_gradient(rgb),
                "random": np.random.default_rng(seed).random(gt.shape)}
    curves = {name: sparsification_curve(error, score) for name, score in rankings.items()}
    curves["oracle"] = sparsification_curve(error, error)
    truth = np.where(mask, gt, np.nan)
    chamfer = {"none": [edge_aware_chamfer(depth, truth, K)] * len(removed_fractions)}
    for cleaning in CLEANINGS:
        chamfer[cleaning] = [edge_aware_chamfer(cleaned_depth(depth, cleaning_masks(depth, spread, f)[cleaning]),
                                                truth, K) for f in removed_fractions]
    return ImageScores(
        ause={name: ause(error, score) for name, score in rankings.items()},
        spearman={name: spearman(error, rankings[name]) for name in ("spread", "gradient")},
        curves=curves, chamfer=chamfer, abs_error_m=float(np.nanmean(error)))


def uncertainty_figure(rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray, error: np.ndarray,
                       path, title: str = "") -> None:
    """A PNG at ``path`` of four panels: the image, its depth, the uncertainty and the absolute error
    (metres; NaN black). matplotlib is imported here (the ``eval`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(13, 2.9), constrained_layout=True)
    panels = [("image", rgb, None), ("depth (m)", depth, "turbo"), ("uncertainty: spread (m)", uncertainty, "magma"),
              ("|error| (m)", error, "magma")]
    for axis, (name, image, cmap) in zip(axes, panels):
        shown = axis.imshow(image, cmap=cmap, interpolation="nearest")
        if cmap is not None:
            figure.colorbar(shown, ax=axis, fraction=0.046)
        axis.set_title(name)
        axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110, facecolor="white")
    plt.close(figure)
