"""rosbag2 writers for synthetic camera streams (rgb8 images, CameraInfo, ground-truth depth, poses).

Messages are built as rclpy messages (``ros/conversions.py`` for the images and the CameraInfo) and
written with ``bag_io.BagRecorder`` (rosbag2 metadata v9, sqlite3 or MCAP storage). ``ros2 bag play``
and ``rosbags``' reader both read the result.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from std_msgs.msg import Header

from ..geometry.camera import PinholeCamera
from ..geometry.poses import pose_to_position_quaternion
from ..synthetic.scene import random_scene, render
from ..synthetic.trajectory import camera_path
from .bag_io import BagRecorder
from .conversions import depth_to_image, pinhole_camera_info, rgb8_to_image


def _header(stamp_ns: int, frame_id: str) -> Header:
    """A Header at ``stamp_ns`` nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def write_camera_bag(path: str | Path, frames: Sequence[np.ndarray], depths: Sequence[np.ndarray],
                     K: np.ndarray, poses: Sequence[np.ndarray], stamps: Sequence[int], *,
                     frame_id: str = "camera_optical_frame", world_frame_id: str = "world",
                     storage: str = "sqlite3", image_topic: str = "/camera/image",
                     info_topic: str = "/camera/camera_info", depth_topic: str = "/camera/depth_gt",
                     pose_topic: str = "/camera/pose") -> Path:
    """Write a camera stream with ground truth to a new rosbag2 directory.

    Per frame ``i``, all four messages carry stamp ``stamps[i]`` (header and bag receive time):
    sensor_msgs/Image ``rgb8`` and sensor_msgs/CameraInfo and sensor_msgs/Image ``32FC1`` (metres, NaN =
    invalid) in ``frame_id``, and geometry_msgs/PoseStamped, the camera optical frame's pose in
    ``world_frame_id``.

    Args:
        path: bag directory to create (must not exist).
        frames: N (H, W, 3) uint8 RGB images.
        depths: N (H, W) float32 depth, metres along the optical axis, NaN = invalid.
        K: (3, 3) float camera matrix of the images, pixels.
        poses: N (4, 4) float ``T_world_from_cam``, metres.
        stamps: N int nanoseconds since the epoch, non-decreasing.
        frame_id: optical frame of the images.
        world_frame_id: frame of the poses.
        storage: one of ``bag_io.STORAGES``.
        image_topic: topic of the RGB images.
        info_topic: topic of the CameraInfo.
        depth_topic: topic of the ground-truth depth.
        pose_topic: topic of the poses.

    Returns:
        The bag directory.

    Raises:
        ValueError: unknown storage, sequences of different lengths, or decreasing stamps.
        BagError: the bag cannot be created (e.g. ``path`` exists).
        ConversionError: an image, depth or K of the wrong shape or dtype.
    """
    lengths = {len(frames), len(depths), len(poses), len(stamps)}
    if len(lengths) != 1:
        raise ValueError(f"frames, depths, poses and stamps differ in length: "
                         f"{len(frames)}, {len(depths)}, {len(poses)}, {len(stamps)}")
    if np.any(np.diff(np.asarray(stamps, dtype=np.int64)) < 0):
        raise ValueError("stamps must be non-decreasing")
    with BagRecorder(path, storage) as recorder:
        for rgb, depth, T, stamp in zip(frames, depths, poses, stamps, strict=True):
            header = _header(stamp, frame_id)
            position, (qw, qx, qy, qz) = pose_to_position_quaternion(T)
            pose = PoseStamped(header=_header(stamp, world_frame_id), pose=Pose(
                position=Point(x=position[0], y=position[1], z=position[2]),
                orientation=Quaternion(w=qw, x=qx, y=qy, z=qz)))
            recorder.write(image_topic, rgb8_to_image(rgb, header), stamp)
            recorder.write(info_topic, pinhole_camera_info(K, rgb.shape[1], rgb.shape[0], header), stamp)
            recorder.write(depth_topic, depth_to_image(depth, header), stamp)
            recorder.write(pose_topic, pose, stamp)
    return recorder.path


def synthetic_camera_bag(path: str | Path, n_frames: int, height: int, width: int, seed: int, *,
                         fps: float = 10.0, start_ns: int = 1_700_000_000_000_000_000, hfov_deg: float = 60.0,
                         supersample: int = 2, **bag_options) -> Path:
    """Render a ``camera_path`` through one ``random_scene`` and write it with ``write_camera_bag``.

    The RGB is antialiased (``supersample``) and the depth topic carries the exact pixel-centre depth.

    Args:
        path: bag directory to create (must not exist).
        n_frames: number of frames (>= 1).
        height: image height, pixels.
        width: image width, pixels.
        seed: the seed of the scene and the path.
        fps: frame rate of the stamps, Hz (> 0).
        start_ns: stamp of the first frame, nanoseconds since the epoch.
        hfov_deg: horizontal field of view, degrees.
        supersample: sub-pixels per axis of the RGB.
        **bag_options: keyword options of ``write_camera_bag`` (``storage``, topics, frame ids).

    Returns:
        The bag directory.

    Raises:
        ValueError: ``fps <= 0``, and as ``write_camera_bag`` and ``camera_path``.
    """
    if not fps > 0.0:
        raise ValueError(f"fps must be > 0, got {fps}")
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    poses = camera_path(scene, n_frames, rng)
    camera = PinholeCamera.from_fov(width, height, hfov_deg)
    renders = [render(scene, camera, T, height, width, supersample) for T in poses]
    stamps = [start_ns + round(i * 1e9 / fps) for i in range(n_frames)]
    return write_camera_bag(path, [r.rgb for r in renders], [r.depth for r in renders], camera.K, poses,
                            stamps, **bag_options)
