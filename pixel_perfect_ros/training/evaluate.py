"""The paper's claim at small scale: tiny PPD vs a regression baseline vs lossy ground truth.

On a held-out synthetic test set (its own seed), three depth sources are scored with the official
protocol (RANSAC fit in log(1+d) space, then AbsRel and delta1) and the edge-aware chamfer distance
(metres, edge band of the GT):

- ``ppd``: the tiny PPD (4 Euler steps), through ``PixelPerfectDepth`` as the node runs it;
- ``baseline``: the tiny regression model of the same data (its encoder gives PPD's semantics);
- ``gt_lossy``: the ground truth itself through a lossy compression, the paper's "GT through VAE"
  control. No depth autoencoder is trained here: the lossy stage is an
  ``LOSSY_FACTOR``-times bilinear down- and up-sampling (a latent grid as coarse as an 8x VAE's).

Its command line is ``tools/evaluate_claim.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from ..geometry.alignment import recover_metric_depth_ransac
from ..geometry.metrics import aligned_metrics, edge_aware_chamfer
from ..inference.pipeline import PixelPerfectDepth
from .train import load_baseline

LOSSY_FACTOR = 8


def lossy(depth: np.ndarray, factor: int = LOSSY_FACTOR) -> np.ndarray:
    """(H, W) depth down-sampled ``factor`` times (area) and up-sampled back (bilinear)."""
    height, width = depth.shape
    small = cv2.resize(depth, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


RelativeModel = Callable[[np.ndarray], np.ndarray]
"""(H, W, 3) uint8 RGB -> (H, W) normalised log-depth ``n`` (unitless, affine-invariant)."""


def load_models(checkpoints: Path, target_area: int, seed: int = 0) -> dict[str, RelativeModel]:
    """The tiny PPD (4 Euler steps at ``target_area`` pixels, ``ppd.pth`` + ``moge2.pt``, run as the node
    runs it) and, when the folder has ``baseline.pth``, the regression baseline, by source name."""
    ppd = PixelPerfectDepth.from_checkpoints(checkpoints / "ppd.pth", checkpoints / "moge2.pt", "moge2", steps=4,
                                             target_area=target_area, seed=seed)
    models = {"ppd": lambda image: ppd(image).depth}
    if (checkpoints / "baseline.pth").is_file():
        baseline = load_baseline(checkpoints / "baseline.pth")

        def run_baseline(image: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return baseline(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0)[0, 0].numpy()

        models["baseline"] = run_baseline
    return models


def evaluate(models: dict[str, RelativeModel], rgb: np.ndarray, depth: np.ndarray, K: np.ndarray,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean AbsRel, delta1 and edge-aware chamfer (m) of each model and of ``gt_lossy``.

    Args:
        models: relative-depth models by source name (``load_models``).
        rgb: (N, H, W, 3) uint8 test images. depth: (N, H, W) float32 GT, metres, NaN = invalid.
        K: (3, 3) camera matrix of the images, pixels.
        seed: RANSAC seed of the alignment.
    """
    scores = {source: {"abs_rel": [], "delta_1": [], "chamfer_m": []} for source in [*models, "gt_lossy"]}

    def add(source: str, aligned_depth: np.ndarray, metrics: dict, gt: np.ndarray, mask: np.ndarray) -> None:
        scores[source]["abs_rel"].append(metrics["abs_rel"])
        scores[source]["delta_1"].append(metrics["delta_1"])
        scores[source]["chamfer_m"].append(edge_aware_chamfer(aligned_depth, gt, K, mask))

    for image, gt in zip(rgb, depth):
        mask = np.isfinite(gt) & (gt > 0)
        for source, model in models.items():
            n = model(image)
            add(source, recover_metric_depth_ransac(n, gt, mask, seed=seed),
                aligned_metrics(n, gt, mask, protocol="ransac_log", seed=seed), gt, mask)
        degraded = lossy(gt)
        add("gt_lossy", degraded, aligned_metrics(degraded, gt, mask, protocol="none"), gt, mask)
    return {source: {name: float(np.nanmean(values)) for name, values in metric.items()}
            for source, metric in scores.items()}
