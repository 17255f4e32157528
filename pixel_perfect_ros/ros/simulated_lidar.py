"""A simulated sparse LiDAR: ground-truth depth kept on a few scan rows, as a sensor's metric depth for
depth_node's ``sparse_topic`` mode (``ppd-demo``)."""
from __future__ import annotations

import dataclasses

import numpy as np

from .bag_io import BagFrame
from .conversions import depth_to_image

LIDAR_ROWS = 16
"""Rows of the simulated LiDAR (evenly spaced; every 2nd column of each)."""


def simulated_lidar(depth: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres, NaN = invalid -> the same kept on ``LIDAR_ROWS`` evenly spaced rows and
    every 2nd column (from column 0), NaN elsewhere."""
    sparse = np.full_like(depth, np.nan)
    rows = np.round(np.linspace(0, depth.shape[0] - 1, LIDAR_ROWS)).astype(int)
    sparse[rows, ::2] = depth[rows, ::2]
    return sparse


def with_lidar(frame: BagFrame) -> BagFrame:
    """The frame with ``sparse``: its ground-truth depth seen by the simulated LiDAR, as a 32FC1 Image
    with the camera image's header."""
    return dataclasses.replace(frame, sparse=depth_to_image(simulated_lidar(frame.gt_depth), frame.image.header))
