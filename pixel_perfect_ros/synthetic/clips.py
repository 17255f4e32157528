"""Video clips of the synthetic world: a camera moving along smooth arcs, optionally cut to other rooms.

A clip is one or more *shots*: each shot is its own ``random_scene`` seen along a ``camera_path`` arc
(moving camera, objects occluding each other as it goes round them); a *cut* starts the next shot in
another room (a scene change, as a tracking loss or a new camera feed). Exact depth and poses per frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.camera import PinholeCamera
from .scene import random_scene, render
from .trajectory import camera_path


@dataclass(frozen=True)
class Clip:
    """One synthetic clip.

    Attributes:
        rgb: (N, H, W, 3) uint8 frames.
        depth: (N, H, W) float32 metres, exact pixel-centre depth (NaN = no hit; rare, rooms are closed).
        K: (3, 3) float64 intrinsics, pixels, shared by all frames.
        T_world_from_cam: (N, 4, 4) float64 poses (camera optical frame -> world of its shot), metres.
        cuts: frame indices where a new shot (another room) starts, ascending, never 0.
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_world_from_cam: np.ndarray
    cuts: tuple[int, ...]


def make_clip(seed: int, n_frames: int, height: int, width: int, cuts: tuple[int, ...] = (), *,
              hfov_deg: float = 60.0, supersample: int = 2) -> Clip:
    """A clip of ``n_frames`` frames whose shots start at 0 and at each of ``cuts``; deterministic from ``seed``.

    Args:
        seed: the seed (each shot's scene and arc come from ``np.random.SeedSequence(seed).spawn``).
        n_frames: frames (>= 1).
        height: image height, pixels.
        width: image width, pixels.
        cuts: frame indices in (0, n_frames) where a new shot starts, ascending.
        hfov_deg: horizontal field of view, degrees.
        supersample: sub-pixels per axis for the antialiased colours.

    Raises:
        ValueError: ``n_frames < 1`` or cuts not ascending inside (0, n_frames).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    cuts = tuple(int(c) for c in cuts)
    if any(not 0 < c < n_frames for c in cuts) or list(cuts) != sorted(set(cuts)):
        raise ValueError(f"cuts must be ascending frame indices in (0, {n_frames}), got {cuts}")
    camera = PinholeCamera.from_fov(width, height, hfov_deg)
    bounds = (0, *cuts, n_frames)
    rgb = np.empty((n_frames, height, width, 3), np.uint8)
    depth = np.empty((n_frames, height, width), np.float32)
    poses = np.empty((n_frames, 4, 4))
    for (start, end), child in zip(zip(bounds[:-1], bounds[1:]), np.random.SeedSequence(seed).spawn(len(bounds) - 1)):
        rng = np.random.default_rng(child)
        scene = random_scene(rng)
        for i, T in enumerate(camera_path(scene, end - start, rng), start=start):
            rendering = render(scene, camera, T, height, width, supersample)
            rgb[i], depth[i], poses[i] = rendering.rgb, rendering.depth, T
    return Clip(rgb=rgb, depth=depth, K=camera.K, T_world_from_cam=poses, cuts=cuts)
