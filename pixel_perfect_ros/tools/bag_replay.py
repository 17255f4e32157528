"""``ppd-bag-replay``: a camera bag published into a running depth_node over DDS, its outputs recorded
and evaluated: accuracy where the bag has ground truth, and what offline evaluation cannot see: frames
lost on the way, end-to-end latency, stamps. The three steps are ``ros/replay.py``'s.

Exit status: 0 done, 1 the node failed or never appeared (or produced nothing), 2 bad arguments or
bag, 130 Ctrl-C, 143 SIGTERM (the bag is closed and valid, the report is marked incomplete).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..ros.bag_io import CameraTopics
from ..ros.parameters import SPECS
from ..ros.replay import replay_bag
from ..ros.replayer import ReplayOptions
from .cli import parameter_assignment, positive_float


def ros_namespace(text: str) -> str:
    """argparse type: a ROS namespace -> "" (root) or "/name" without a trailing slash."""
    stripped = text.strip("/")
    return f"/{stripped}" if stripped else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-bag-replay",
        description="Publish a camera bag into depth_node over DDS with its original timing, record the node's "
        "outputs to a bag and evaluate them: accuracy against the bag's ground truth, dropped frames, latency.")
    parser.add_argument("bag", type=Path, help="camera bag (rosbag2 directory, sqlite3 or MCAP)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: depth_bag/, report/ (neither may exist yet)")
    parser.add_argument("--image-topic", required=True,
                        help="sensor_msgs/Image or CompressedImage (the node then needs use_compressed:=true)")
    parser.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo, published with each image")
    parser.add_argument("--depth-topic", help="ground-truth depth (32FC1 m or 16UC1 mm), for the evaluation")
    parser.add_argument("--sparse-topic", help="metric sensor depth published on the node's sparse_depth")
    parser.add_argument("--pose-topic", help="camera poses for the temporal alignment error: PoseStamped, "
                        "TransformStamped, or tf2_msgs/TFMessage with --pose-frames")
    parser.add_argument("--pose-frames", nargs=2, metavar=("PARENT", "CHILD"), help="transform to take from a tf topic")
    parser.add_argument("--tolerance-ms", type=positive_float, default=5.0,
                        help="largest stamp difference of a message matched to an image, ms (default: 5)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--rate", type=positive_float, default=1.0,
                        help="bag time per wall time: 2 plays twice as fast (default: 1)")
    timing.add_argument("--paced", action="store_true",
                        help="publish each frame once the previous one's outputs arrived (deterministic, no drops)")
    parser.add_argument("--clock", action="store_true",
                        help="also publish /clock in bag time, for a node with use_sim_time:=true")
    parser.add_argument("--namespace", type=ros_namespace, default="", help="the node's namespace (default: /)")
    parser.add_argument("--start-node", action="store_true",
                        help="start depth_node here (stopped after), with the -p parameters")
    parser.add_argument("-p", dest="parameters", type=parameter_assignment, action="append", default=[],
                        metavar="NAME:=VALUE", help="a depth_node parameter, with --start-node (repeatable)")
    parser.add_argument("--timeout", type=positive_float, default=60.0,
                        help="longest wait for the node, a paced frame's outputs, or outputs after the last frame, "
                        "s (default: 60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.parameters and not args.start_node:
        parser.error("-p sets the parameters of a node started with --start-node")
    unknown = sorted({name for name, _ in args.parameters} - set(SPECS) - {"use_sim_time"})
    if unknown:  # the node would ignore them silently
        parser.error(f"unknown depth_node parameter(s) {', '.join(unknown)}; its parameters are: "
                     f"use_sim_time, {', '.join(SPECS)}")
    topics = CameraTopics(image=args.image_topic, camera_info=args.camera_info_topic, depth=args.depth_topic,
                          sparse=args.sparse_topic, pose=args.pose_topic,
                          pose_frames=tuple(args.pose_frames) if args.pose_frames else None)
    options = ReplayOptions(namespace=args.namespace, rate=args.rate, paced=args.paced, clock=args.clock,
                            timeout_s=args.timeout, tolerance_ns=round(args.tolerance_ms * 1e6))
    return replay_bag(args.bag, topics, args.out, options, dict(args.parameters) if args.start_node else None)


if __name__ == "__main__":
    sys.exit(main())
