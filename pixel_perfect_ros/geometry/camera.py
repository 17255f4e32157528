"""The ideal pinhole camera: intrinsics in pixels, OpenCV optical frame (x right, y down, z forward)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole intrinsics in pixels, OpenCV optical frame, no distortion."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = 60.0) -> PinholeCamera:
        """Square pixels with the principal point at the image centre ``((W-1)/2, (H-1)/2)``.

        Args:
            width: image width, pixels.
            height: image height, pixels.
            hfov_deg: horizontal field of view, degrees, in (0, 180).

        Returns:
            The camera.

        Raises:
            ValueError: non-positive size or field of view outside (0, 180).
        """
        if width <= 0 or height <= 0 or not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"need width, height > 0 and 0 < hfov_deg < 180, got {width}, {height}, {hfov_deg}")
        f = width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix, pixels."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
