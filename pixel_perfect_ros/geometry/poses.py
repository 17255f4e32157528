"""Rigid poses <-> position and unit quaternion, as geometry_msgs/Pose and Transform carry them.

Poses are (4, 4) float64 rigid transforms ``T`` (e.g. ``T_world_from_cam``: camera optical frame ->
world), metres. Quaternions are ``(w, x, y, z)``, scalar first; ROS messages name their fields
``x, y, z, w``, so callers pass ``(q.w, q.x, q.y, q.z)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pose_to_position_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position and orientation of a pose (Shepperd's method).

    Args:
        T: (4, 4) rigid transform, metres.

    Returns:
        ``(position, quaternion)``: (3,) float64 metres and (4,) float64 unit ``(w, x, y, z)``, ``w >= 0``.

    Raises:
        ValueError: ``T`` is not (4, 4).
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T must be (4, 4), got {T.shape}")
    R = T[:3, :3]
    trace = np.trace(R)
    if trace > 0.0:  # divide by the largest of the four candidates for stability
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0] * 4
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.array(q) / np.linalg.norm(q)
    return T[:3, 3].copy(), q if q[0] >= 0.0 else -q


def position_quaternion_to_pose(position: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """The rigid transform of a position and a quaternion; the inverse of ``pose_to_position_quaternion``.

    Args:
        position: (3,) translation, metres.
        quaternion: (4,) rotation ``(w, x, y, z)``, any finite nonzero norm (normalised here).

    Returns:
        (4, 4) float64 ``T`` with ``T[:3, :3] = R``, ``T[:3, 3] = position``.

    Raises:
        ValueError: wrong lengths, or a zero or non-finite quaternion.
    """
    t = np.asarray(position, dtype=np.float64)
    q = np.asarray(quaternion, dtype=np.float64)
    if t.shape != (3,) or q.shape != (4,):
        raise ValueError(f"position must be (3,) and quaternion (4,), got {t.shape}, {q.shape}")
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"quaternion must be finite and nonzero, got {q}")
    w, x, y, z = q / norm
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                 [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                 [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = t
    return T
