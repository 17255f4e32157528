"""Datasets of independent synthetic samples: RGB, exact depth, intrinsics and poses, from a seed."""
from __future__ import annotations

import numpy as np

from ..geometry.camera import PinholeCamera
from .scene import random_scene, render
from .trajectory import random_view


def make_dataset(n: int, height: int, width: int, seed: int, *, hfov_deg: float = 60.0,
                 supersample: int = 2) -> dict[str, np.ndarray]:
    """Independent random samples: each its own ``random_scene`` seen from a ``random_view``.

    Sample ``i`` depends only on ``(seed, i)`` (``np.random.SeedSequence(seed).spawn``), so any prefix
    of a larger dataset is the smaller one.

    Args:
        n: number of samples (>= 0).
        height: image height, pixels.
        width: image width, pixels.
        seed: the seed.
        hfov_deg: horizontal field of view, degrees (``PinholeCamera.from_fov``).
        supersample: sub-pixels per axis for the antialiased ``rgb`` and ``depth_mixed``.

    Returns:
        ``rgb`` (N, H, W, 3) uint8; ``depth`` (N, H, W) float32 metres, exact pixel-centre depth, NaN =
        no hit (rare: rooms are closed); ``depth_mixed`` (N, H, W) float32 metres, sub-pixel mean;
        ``K`` (3, 3) float64 shared intrinsics; ``T_world_from_cam`` (N, 4, 4) float64 poses.
    """
    camera = PinholeCamera.from_fov(width, height, hfov_deg)
    out = {"rgb": np.empty((n, height, width, 3), np.uint8), "depth": np.empty((n, height, width), np.float32),
           "depth_mixed": np.empty((n, height, width), np.float32), "K": camera.K,
           "T_world_from_cam": np.empty((n, 4, 4))}
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(child)
        scene = random_scene(rng)
        T = random_view(scene, rng)
        out["rgb"][i], out["depth"][i], out["depth_mixed"][i] = render(scene, camera, T, height, width, supersample)
        out["T_world_from_cam"][i] = T
    return out
