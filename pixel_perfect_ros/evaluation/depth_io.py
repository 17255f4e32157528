"""Depth maps to files: 16-bit PNG with a fixed, invertible scale, float32 .npy, and a colour image."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PNG16_RANGE = (-0.5, 1.5)
"""Normalised log-depth range stored in 16-bit PNGs: value = round((d + 0.5) / 2 * 65535), clipped.

The model's training target lies in [-0.5, 1.0] (PPD_SPEC 2.1); the margin keeps unclamped outputs.
Inverse: d = png / 65535 * 2 - 0.5 (resolution 3e-5)."""


def to_png16(depth: np.ndarray) -> np.ndarray:
    """(H, W) float normalised log-depth -> (H, W) uint16 on the fixed ``PNG16_RANGE`` scale."""
    lo, hi = PNG16_RANGE
    scaled = (np.clip(depth, lo, hi) - lo) / (hi - lo) * 65535.0
    return np.round(np.nan_to_num(scaled, nan=0.0)).astype(np.uint16)


def from_png16(png: np.ndarray) -> np.ndarray:
    """Inverse of ``to_png16``: (H, W) uint16 -> (H, W) float32 normalised log-depth."""
    lo, hi = PNG16_RANGE
    return (png.astype(np.float32) / 65535.0 * (hi - lo) + lo).astype(np.float32)


def colorize(values: np.ndarray, lo: float, hi: float, colormap: int = cv2.COLORMAP_TURBO) -> np.ndarray:
    """Values on a fixed range as a colour image (``lo`` at the bottom of ``colormap``), NaN black.

    Args:
        values: (H, W) float; clipped to ``[lo, hi]``; non-finite = no value.
        lo: value at the bottom of the colour map.
        hi: value at the top (> ``lo``).
        colormap: an OpenCV colour map (turbo: ``lo`` blue, ``hi`` red).

    Returns:
        (H, W, 3) uint8 BGR.
    """
    finite = np.isfinite(values)
    scaled = np.clip((np.where(finite, values, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    image = cv2.applyColorMap(np.round(255.0 * scaled).astype(np.uint8), colormap)
    image[~finite] = 0
    return image


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 BGR image, per-image min-max, near = bright (inferno), NaN black."""
    finite = np.isfinite(depth)
    lo, hi = (float(depth[finite].min()), float(depth[finite].max())) if finite.any() else (0.0, 1.0)
    return colorize(-depth, -hi, -lo, cv2.COLORMAP_INFERNO)


def write_depth(depth: np.ndarray, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>_depth.npy`` (float32), ``<stem>_depth16.png`` and ``<stem>_depth_color.png``."""
    paths = [out_dir / f"{stem}_depth.npy", out_dir / f"{stem}_depth16.png", out_dir / f"{stem}_depth_color.png"]
    np.save(paths[0], depth.astype(np.float32))
    for path, image in ((paths[1], to_png16(depth)), (paths[2], colorize_depth(depth))):
        if not cv2.imwrite(str(path), image):
            raise OSError(f"could not write {path}")
    return paths
