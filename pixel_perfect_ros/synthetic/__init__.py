"""Procedural synthetic world with exact per-pixel depth: scenes, a ray caster, camera paths, datasets.

``scene`` (primitives, ``random_scene``, ``render``, ``make_dataset``), ``trajectory`` (poses,
``camera_path``). No ROS here: ``ros/synthetic_bag.py`` writes the world's camera streams as bags.
"""
from .scene import PinholeCamera, Rendering, Scene, make_dataset, random_scene, render
from .trajectory import camera_path, look_at, pose_to_position_quaternion, random_view

__all__ = ["PinholeCamera", "Rendering", "Scene", "camera_path", "look_at", "make_dataset",
           "pose_to_position_quaternion", "random_scene", "random_view", "render"]
