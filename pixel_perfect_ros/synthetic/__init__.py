"""Procedural synthetic world with exact per-pixel depth: scenes, a ray caster, camera paths, datasets.

``scene`` (primitives, ``random_scene``, ``render``, ``make_dataset``), ``trajectory`` (poses,
``camera_path``), ``bag`` (rosbag2 writers; imports rclpy messages, so import it only where ROS is).
"""
from .scene import PinholeCamera, Rendering, Scene, make_dataset, random_scene, render
from .trajectory import camera_path, look_at, pose_to_position_quaternion, random_view

__all__ = ["PinholeCamera", "Rendering", "Scene", "camera_path", "look_at", "make_dataset",
           "pose_to_position_quaternion", "random_scene", "random_view", "render"]
