"""Benchmark of the flying-pixel filters and the evaluation metrics on one image size (CPU).

Prints the median wall time per frame, in milliseconds, of the image-space ``flying_pixel_mask``
(4- and 8-connectivity) against Open3D-style statistical outlier removal (``statistical_outlier_mask``,
k = 20, std ratio 3, PPD's ``run_point_cloud.py`` settings) on the same back-projected cloud (every
pixel, and every second pixel), plus ``depth_metrics`` and ``edge_aware_chamfer``. The scene is
synthetic and seeded: a tilted wall, a sphere and a box, rendered with 2x2 supersampling so the
silhouettes carry mixed (flying) pixels.

    python -m pixel_perfect_ros.tools.bench_filters [--width 1024] [--height 768] [--repeats 10]
        [--sor-repeats 1]
"""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

from ..geometry.filters import flying_pixel_mask, statistical_outlier_mask
from ..geometry.metrics import depth_metrics, edge_aware_chamfer
from ..geometry.projection import back_project
from .cli import median_ms, positive_int

SUPERSAMPLE = 2
"""Sub-pixels per axis when rendering the scene (mixed pixels on silhouettes)."""
SOR_NEIGHBORS, SOR_STD_RATIO = 20, 3.0
"""PPD's ``remove_statistical_outlier(nb_neighbors=20, std_ratio=3.0)``."""
REL_THRESHOLD = 0.05
"""Flying-pixel relative threshold benchmarked."""
MIXED_SPAN = 0.1
"""A pixel whose sub-pixel depths span more than this fraction of its depth is a mixed pixel."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_filters", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=positive_int, default=1024, help="image width, px (default: 1024)")
    parser.add_argument("--height", type=positive_int, default=768, help="image height, px (default: 768)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed runs per fast case (default: 10)")
    parser.add_argument("--sor-repeats", type=positive_int, default=1,
                        help="timed runs of statistical outlier removal, seconds each (default: 1)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (exits with status 2 on bad values, like argparse)."""
    return build_parser().parse_args(argv)


def scene(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W) float32 depth in metres, its (3, 3) K, and the (H, W) bool truth of mixed pixels.

    A pixel is mixed (flying) when its sub-pixels' depths span more than ``MIXED_SPAN`` of its depth,
    i.e. it straddles a silhouette.
    """
    f = 0.8 * width
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    s = SUPERSAMPLE
    u = (np.arange(width * s) + 0.5) / s - 0.5  # sub-pixel centres, pixel units
    v = (np.arange(height * s) + 0.5) / s - 0.5
    x = ((u - K[0, 2]) / f)[None, :]  # (1, W*s) ray x / z
    y = ((v - K[1, 2]) / f)[:, None]  # (H*s, 1) ray y / z
    normal = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])
    depth = 6.0 / (normal[0] * x + normal[1] * y + normal[2])  # tilted wall, (H*s, W*s)
    # Sphere: centre (0.3, 0.1, 3), radius 0.8; z of the first hit along each ray.
    centre, radius = np.array([0.3, 0.1, 3.0]), 0.8
    norm2 = x ** 2 + y ** 2 + 1.0
    b = (centre[0] * x + centre[1] * y + centre[2]) / norm2  # ray parameter (z units) of the closest approach
    disc = b ** 2 - (centre @ centre - radius ** 2) / norm2
    sphere_z = np.where(disc > 0, b - np.sqrt(np.maximum(disc, 0.0)), np.inf)
    depth = np.minimum(depth, sphere_z)
    # Box: a fronto-parallel face at 2 m over part of the image.
    box = (x > -0.45) & (x < -0.15) & (y > -0.05) & (y < 0.3)
    depth = np.where(box, np.minimum(depth, 2.0), depth)
    blocks = depth.reshape(height, s, width, s)
    mean = blocks.mean(axis=(1, 3))  # area average: mixed pixels on silhouettes
    mixed = blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3)) > MIXED_SPAN * mean
    return mean.astype(np.float32), K, mixed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    depth, K, mixed = scene(args.height, args.width)
    rng = np.random.default_rng(0)
    pred = depth * rng.uniform(0.95, 1.05, depth.shape).astype(np.float32)  # noisy aligned prediction
    blurred = cv2.blur(depth, (5, 5))  # edge-blurred prediction for the chamfer
    valid = np.isfinite(depth)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    cloud = back_project(depth, fx, fy, cx, cy).reshape(-1, 3)  # every pixel
    cloud_s2 = back_project(depth, fx, fy, cx, cy, stride=2).reshape(-1, 3)  # every second pixel

    print(f"{args.width}x{args.height} ({depth.size} px), median of {args.repeats} runs "
          f"({args.sor_repeats} for SOR, whose neighbour search uses all {os.cpu_count()} cores)")
    print(f"{int(mixed.sum())} mixed pixels ({mixed.mean():.2%}); 'removed' = share of all points, "
          f"'mixed found' = share of the mixed pixels removed")
    print(f"{'case':<52} {'ms':>9} {'removed':>9} {'mixed found':>12}")
    cases = [  # (name, fn -> removed mask, repeats, mixed truth of the points)
        ("flying_pixel_mask 4-conn", lambda: flying_pixel_mask(depth, REL_THRESHOLD, 4), args.repeats, mixed),
        ("flying_pixel_mask 8-conn", lambda: flying_pixel_mask(depth, REL_THRESHOLD, 8), args.repeats, mixed),
        (f"statistical_outlier_mask k={SOR_NEIGHBORS}, {len(cloud)} pts",
         lambda: ~statistical_outlier_mask(cloud, SOR_NEIGHBORS, SOR_STD_RATIO), args.sor_repeats, mixed.ravel()),
        (f"statistical_outlier_mask k={SOR_NEIGHBORS}, stride 2, {len(cloud_s2)} pts",
         lambda: ~statistical_outlier_mask(cloud_s2, SOR_NEIGHBORS, SOR_STD_RATIO), args.sor_repeats,
         mixed[::2, ::2].ravel()),
    ]
    results = {}
    for name, fn, repeats, truth in cases:
        results[name] = median_ms(fn, repeats)
        removed = fn()
        print(f"{name:<52} {results[name]:>9.2f} {removed.mean():>8.2%} {removed[truth].mean():>11.1%}")
    for name, fn in (("depth_metrics", lambda: depth_metrics(pred, depth, valid)),
                     ("edge_aware_chamfer (5x5 blurred prediction)", lambda: edge_aware_chamfer(blurred, depth, K))):
        results[name] = median_ms(fn, args.repeats)
        print(f"{name:<52} {results[name]:>9.2f}")
    sor_full = results[cases[2][0]]
    print(f"flying_pixel_mask (8-conn) is {sor_full / results[cases[1][0]]:.0f}x faster than full-resolution SOR")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
