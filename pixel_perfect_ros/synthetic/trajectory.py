"""Camera poses and collision-free camera paths through a synthetic ``Scene``.

Poses are ``T_world_from_cam``: (4, 4) float64 rigid transforms from the camera optical frame (x right,
y down, z forward) to the z-up world frame, metres (``geometry/poses.py`` turns them into quaternions).
"""
from __future__ import annotations

import math

import numpy as np

from .scene import Scene

_WORLD_UP = np.array([0.0, 0.0, 1.0])
_MAX_TRIES = 1000
"""Random proposals before a pose or path search gives up."""


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = _WORLD_UP) -> np.ndarray:
    """The camera pose at ``eye`` whose optical axis points at ``target``, image rows along ``-up``.

    Args:
        eye: (3,) camera centre, world frame, metres.
        target: (3,) point to look at, world frame, metres; not straight along ``up`` from ``eye``.
        up: (3,) world up direction.

    Returns:
        (4, 4) float64 ``T_world_from_cam``.

    Raises:
        ValueError: ``target`` equals ``eye`` or lies on the ``up`` line through it.
    """
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    forward = target - eye
    right = np.cross(forward, up)
    if np.linalg.norm(forward) == 0.0 or np.linalg.norm(right) < 1e-9 * np.linalg.norm(forward):
        raise ValueError(f"cannot look from {eye} at {target} with up {up}")
    z = forward / np.linalg.norm(forward)
    x = right / np.linalg.norm(right)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)  # columns: camera axes in the world
    T[:3, 3] = eye
    return T


def clearance(scene: Scene, xy: np.ndarray) -> np.ndarray:
    """Horizontal distance from floor positions to the nearest object footprint or wall.

    Args:
        scene: the scene (its ``footprints`` and ``room_size``).
        xy: (N, 2) float world positions, metres.

    Returns:
        (N,) float64 metres; negative inside a footprint or outside the room; ``inf`` for an empty open
        scene.
    """
    xy = np.asarray(xy, dtype=np.float64)
    dist = np.full(xy.shape[0], np.inf)
    if scene.footprints.size:
        centre_dist = np.linalg.norm(xy[:, None, :] - scene.footprints[None, :, :2], axis=2)  # (N, M)
        dist = (centre_dist - scene.footprints[None, :, 2]).min(axis=1)
    if scene.room_size is not None:
        half = np.array(scene.room_size[:2]) / 2.0
        dist = np.minimum(dist, (half - np.abs(xy)).min(axis=1))
    return dist


def _objects_centre(scene: Scene) -> np.ndarray:
    """(2,) mean xy of the footprints, or the origin when there are none."""
    return scene.footprints[:, :2].mean(axis=0) if scene.footprints.size else np.zeros(2)


def random_view(scene: Scene, rng: np.random.Generator, min_clearance_m: float = 0.4) -> np.ndarray:
    """A camera 0.8-1.8 m above the floor at a free place, looking at a random object.

    The target is a random object's centre at 0-0.6 m height, jittered by up to 0.3 m (the room centre
    when there are no objects), so most views see objects in front of the room's walls.

    Args:
        scene: the scene.
        rng: the random generator (advanced).
        min_clearance_m: least horizontal distance to object footprints and walls, metres.

    Returns:
        (4, 4) float64 ``T_world_from_cam``.

    Raises:
        RuntimeError: no free place found (a room too small or too full for the clearance).
    """
    half = np.array(scene.room_size[:2]) / 2.0 if scene.room_size is not None else np.full(2, 5.0)
    for _ in range(_MAX_TRIES):
        xy = rng.uniform(-half, half)
        if clearance(scene, xy[None])[0] < min_clearance_m:
            continue
        if scene.footprints.size:
            target_xy = scene.footprints[rng.integers(len(scene.footprints)), :2] + rng.uniform(-0.3, 0.3, 2)
        else:
            target_xy = np.zeros(2)
        if np.linalg.norm(target_xy - xy) < 0.5:
            continue
        eye = np.array([*xy, rng.uniform(0.8, 1.8)])
        return look_at(eye, np.array([*target_xy, rng.uniform(0.0, 0.6)]))
    raise RuntimeError(f"no camera position with {min_clearance_m} m clearance found in {_MAX_TRIES} tries")


def camera_path(scene: Scene, n_frames: int, rng: np.random.Generator, min_clearance_m: float = 0.4,
                ) -> list[np.ndarray]:
    """A smooth orbit arc around the objects, always looking at their centre.

    The camera moves at constant angular speed along a circular arc (radius 0.8 m up to the room's
    half-size, sweep 60-180 degrees) around the objects' mean position (if no such arc is free, around random places in
    the room's middle), at 0.9-1.7 m height with a slow
    0.1 m vertical bob, looking at that centre 0.4 m above the floor. The whole arc (sampled at 256
    points, not only the frames) keeps ``min_clearance_m`` from objects and walls.

    Args:
        scene: the scene.
        n_frames: number of poses (>= 1).
        rng: the random generator (advanced).
        min_clearance_m: least horizontal distance to object footprints and walls, metres.

    Returns:
        ``n_frames`` (4, 4) float64 ``T_world_from_cam``, in path order.

    Raises:
        ValueError: ``n_frames < 1``.
        RuntimeError: no free arc found in the scene.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    half = np.array(scene.room_size[:2]) / 2.0 if scene.room_size is not None else np.full(2, 5.0)
    max_radius = float(half.min())
    for attempt in range(_MAX_TRIES):
        # Orbit the objects' centre first; if that is blocked, orbit random places in the room.
        centre = _objects_centre(scene) if attempt < _MAX_TRIES // 2 else rng.uniform(-half / 2.0, half / 2.0)
        radius = rng.uniform(0.8, max(0.8, max_radius))
        start = rng.uniform(0.0, 2.0 * math.pi)
        sweep = rng.choice([-1.0, 1.0]) * rng.uniform(math.pi / 3.0, math.pi)
        height, bob_phase = rng.uniform(0.9, 1.7), rng.uniform(0.0, 2.0 * math.pi)
        dense = start + sweep * np.linspace(0.0, 1.0, 256)
        xy = centre + radius * np.stack([np.cos(dense), np.sin(dense)], axis=1)  # (256, 2)
        if clearance(scene, xy).min() < min_clearance_m:
            continue
        s = np.linspace(0.0, 1.0, n_frames)
        angles = start + sweep * s
        target = np.array([*centre, 0.4])
        return [look_at(np.array([*(centre + radius * np.array([math.cos(a), math.sin(a)])),
                                  height + 0.1 * math.sin(bob_phase + 2.0 * math.pi * si)]), target)
                for a, si in zip(angles, s, strict=True)]
    raise RuntimeError(f"no collision-free camera arc found in {_MAX_TRIES} tries")
