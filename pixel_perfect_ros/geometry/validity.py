"""How much of a depth map is usable: the health figure the node reports and the CLIs check."""
from __future__ import annotations

import numpy as np

MIN_VALID_FRACTION = 0.01
"""Below this share of valid pixels a depth map is treated as failed (an ERROR, a non-zero exit)."""


def valid_fraction(depth: np.ndarray) -> float:
    """Share of pixels of ``depth`` (any shape, float) that are finite and > 0, in [0, 1] (0 for an empty map)."""
    if depth.size == 0:
        return 0.0
    return float(np.count_nonzero(np.isfinite(depth) & (depth > 0)) / depth.size)
