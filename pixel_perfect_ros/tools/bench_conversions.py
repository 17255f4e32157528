"""Benchmark of the message conversions and point-cloud packing on one image size (CPU).

Prints the median over ``--repeats`` runs, in milliseconds, for each conversion the node makes per
frame, and a naive per-pixel Python loop packing an xyzrgb cloud (timed on 64x48 in the same run,
scaled to the benchmark size per pixel) against the vectorised ``point_cloud``.

    python -m pixel_perfect_ros.tools.bench_conversions [--width 1024] [--height 768] [--repeats 20]
        [--keep-freed-memory]

Run it with ``ROS_PYTHON_CHECK_FIELDS=1`` to measure with message field checks on. Full-resolution
clouds are large (12.6 MB xyzrgb at 1024x768, plus the copy rclpy's ``data`` setter makes): where glibc
hands freed memory back to the OS every call, fresh pages dominate their time. ``--keep-freed-memory``
applies the allocator tuning that ``depth_node`` applies at start (``ros/allocator.py``).
"""
from __future__ import annotations

import argparse
import struct
from typing import Callable

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..ros.allocator import keep_freed_memory
from ..ros.conversions import compressed_to_rgb8, depth_to_image, image_to_rgb8
from ..ros.pointcloud import point_cloud
from .cli import median_ms, positive_int

ROW_PADDING = 64
"""Bytes of padding per row in the benchmark's Image messages (exercises ``step``)."""
NAIVE_SIZE = (48, 64)
"""(H, W) of the per-pixel Python-loop baseline."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_conversions", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=positive_int, default=1024, help="image width, px (default: 1024)")
    parser.add_argument("--height", type=positive_int, default=768, help="image height, px (default: 768)")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed runs per case (default: 20)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="tune glibc's allocator as depth_node does (ros/allocator.py)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (exits with status 2 on bad values, like argparse)."""
    return build_parser().parse_args(argv)


def padded_image(pixels: np.ndarray, encoding: str) -> Image:
    """(H, W, C) uint8 -> Image with ``ROW_PADDING`` bytes of padding per row."""
    height, width, channels = pixels.shape
    rows = np.zeros((height, width * channels + ROW_PADDING), np.uint8)  # (H, step)
    rows[:, :width * channels] = pixels.reshape(height, -1)
    return Image(height=height, width=width, encoding=encoding, step=rows.shape[1], data=rows.tobytes())


def naive_xyzrgb(depth: np.ndarray, rgb: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> bytes:
    """The per-pixel Python loop the vectorised packing replaces (baseline only)."""
    out = bytearray()
    for v in range(depth.shape[0]):
        for u in range(depth.shape[1]):
            z = float(depth[v, u])
            r, g, b = (int(c) for c in rgb[v, u])
            out += struct.pack("<fffI", (u - cx) * z / fx, (v - cy) * z / fy, z, (r << 16) | (g << 8) | b)
    return bytes(out)


def scene(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (H, W) float32 depth in metres (2 % NaN), (H, W, 3) uint8 RGB and a (3, 4) P."""
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 10.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.02] = np.nan
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    f = 0.8 * width
    P = np.array([[f, 0.0, width / 2, 0.0], [0.0, f, height / 2, 0.0], [0.0, 0.0, 1.0, 0.0]])
    return depth, rgb, P


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep_freed_memory and not keep_freed_memory():
        print("allocator tuning unavailable (not glibc): measuring with the defaults")
    depth, rgb, P = scene(args.height, args.width)
    header = Header(frame_id="camera_optical_frame")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    images = {"rgb8": padded_image(rgb, "rgb8"), "bgr8": padded_image(rgb[..., ::-1], "bgr8"),
              "bgra8": padded_image(rgba[..., [2, 1, 0, 3]], "bgra8")}
    smooth_bgr = cv2.GaussianBlur(rgb[..., ::-1], (0, 0), 3.0)  # camera-like JPEG size, not noise's
    jpeg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", smooth_bgr)[1].tobytes())

    cases: list[tuple[str, Callable[[], object]]] = [
        *[(f"image_to_rgb8 {enc} (step +{ROW_PADDING} B)", lambda m=msg: image_to_rgb8(m))
          for enc, msg in images.items()],
        (f"compressed_to_rgb8 jpeg ({len(jpeg.data) // 1024} KiB)", lambda: compressed_to_rgb8(jpeg)),
        ("depth_to_image 32FC1", lambda: depth_to_image(depth, header, "32FC1")),
        ("depth_to_image 16UC1", lambda: depth_to_image(depth, header, "16UC1")),
        ("point_cloud xyz", lambda: point_cloud(depth, P, header)),
        ("point_cloud xyzrgb", lambda: point_cloud(depth, P, header, rgb)),
        ("point_cloud xyz, decimation 2", lambda: point_cloud(depth, P, header, decimation=2)),
        ("point_cloud xyzrgb, decimation 2", lambda: point_cloud(depth, P, header, rgb, decimation=2)),
    ]
    print(f"{args.width}x{args.height}, median of {args.repeats} runs")
    print(f"{'case':<44} {'ms':>9}")
    results = {}
    for name, fn in cases:
        results[name] = median_ms(fn, args.repeats)
        print(f"{name:<44} {results[name]:>9.2f}")

    # Baseline: per-pixel loop on a small image, scaled per pixel to the benchmark size.
    small_h, small_w = NAIVE_SIZE
    small_depth, small_rgb, small_P = scene(small_h, small_w)
    naive_small = median_ms(lambda: naive_xyzrgb(small_depth, small_rgb, small_P[0, 0], small_P[1, 1],
                                                 small_P[0, 2], small_P[1, 2]), max(3, args.repeats // 4))
    naive = naive_small * (args.width * args.height) / (small_w * small_h)
    vectorised = results["point_cloud xyzrgb"]
    print(f"{f'naive Python loop xyzrgb ({small_w}x{small_h}, scaled)':<44} {naive:>9.2f}")
    print(f"vectorised point_cloud xyzrgb is {naive / vectorised:.0f}x faster than the per-pixel loop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
