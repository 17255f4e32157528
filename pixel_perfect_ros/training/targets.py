"""Training targets of PPD: per-image normalised log-depth and valid masks (PPD_SPEC 2.1, 6).

``l = log(d + 1)``; ``q2``, ``q98`` = 2nd / 98th percentiles of ``l`` over the valid pixels with
``d < 80`` m (``torch.quantile``, linear interpolation); if ``q98 - q2 < 1e-6`` then ``q98 = q2 + 1e-6``;
``n = clamp((l - q2) / (q98 - q2), -0.5, 1)`` and the flow data is ``x_0 = n - 0.5`` in [-1, 0.5].
"""
from __future__ import annotations

import torch

MAX_QUANTILE_DEPTH_M = 80.0
"""Only pixels nearer than this enter the quantiles (they are still normalised and supervised)."""
QUANTILES = (0.02, 0.98)
MIN_LOG_RANGE = 1e-6
"""Smallest ``q98 - q2`` (a flat scene would divide by zero)."""
CLAMP_RANGE = (-0.5, 1.0)
X0_OFFSET = 0.5
"""``x_0 = n - 0.5``; the sampler adds it back."""


def valid_depth_mask(depth_m: torch.Tensor) -> torch.Tensor:
    """Pixels with a usable ground truth: finite and positive.

    Args:
        depth_m: (..., H, W) float, metres, NaN / inf / <= 0 = invalid.

    Returns:
        (..., H, W) bool.
    """
    return torch.isfinite(depth_m) & (depth_m > 0)


def normalised_log_depth(depth_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-image normalised log-depth ``n`` and its loss mask.

    Args:
        depth_m: (N, H, W) float32, metres, camera optical frame, NaN (or inf, <= 0) = invalid.

    Returns:
        n: (N, H, W) float32 in [-0.5, 1]; 0 at invalid pixels (masked out).
        mask: (N, H, W) bool, valid pixels; all False for an image with no valid pixel nearer than
            80 m (its quantiles are undefined, so it is not supervised at all).

    Raises:
        ValueError: if ``depth_m`` is not (N, H, W) floating point.
    """
    if depth_m.ndim != 3 or not depth_m.is_floating_point():
        raise ValueError(f"depth must be a floating (N, H, W) tensor, got {tuple(depth_m.shape)} {depth_m.dtype}")
    depth_m = depth_m.float()
    valid = valid_depth_mask(depth_m)
    log_depth = torch.log(torch.where(valid, depth_m, 0.0) + 1.0)  # (N, H, W); 0 at invalid pixels
    quantile_set = valid & (depth_m < MAX_QUANTILE_DEPTH_M)
    n = torch.zeros_like(log_depth)
    mask = torch.zeros_like(valid)
    q = torch.tensor(QUANTILES, dtype=torch.float32)
    for i in range(depth_m.shape[0]):  # quantiles over a different pixel set per image
        values = log_depth[i][quantile_set[i]]
        if values.numel() == 0:
            continue
        q2, q98 = torch.quantile(values, q).unbind()
        q98 = torch.maximum(q98, q2 + MIN_LOG_RANGE)  # q98 - q2 < 1e-6 -> q98 = q2 + 1e-6
        scaled = ((log_depth[i] - q2) / (q98 - q2)).clamp(*CLAMP_RANGE)
        n[i] = torch.where(valid[i], scaled, 0.0)
        mask[i] = valid[i]
    return n, mask


def flow_target(depth_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow data ``x_0 = n - 0.5`` with a channel axis, and its float mask.

    Args:
        depth_m: (N, H, W) float32, metres, NaN = invalid.

    Returns:
        x0: (N, 1, H, W) float32 in [-1, 0.5]; -0.5 at invalid pixels (masked out).
        mask: (N, 1, H, W) float32 in {0, 1}.
    """
    n, mask = normalised_log_depth(depth_m)
    return (n - X0_OFFSET).unsqueeze(1), mask.unsqueeze(1).float()
