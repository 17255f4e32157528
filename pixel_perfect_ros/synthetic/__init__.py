"""Procedural synthetic world with exact per-pixel depth: scenes, a ray caster, camera paths, datasets.

``scene`` (primitives, ``random_scene``, ``render``), ``trajectory`` (``look_at``, ``random_view``,
``camera_path``), ``dataset`` (``make_dataset``), ``clips`` (``make_clip``: moving-camera clips with cuts); the camera model is ``geometry/camera.py``. No ROS
here: ``ros/synthetic_bag.py`` writes the world's camera streams as bags.
"""
from .clips import Clip, make_clip
from .dataset import make_dataset
from .scene import Rendering, Scene, random_scene, render
from .trajectory import camera_path, look_at, random_view

__all__ = ["Clip", "Rendering", "Scene", "camera_path", "look_at", "make_clip", "make_dataset", "random_scene", "random_view", "render"]
