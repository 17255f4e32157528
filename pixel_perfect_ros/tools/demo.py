"""``ppd-demo``: the whole pipeline on a synthetic camera bag, ending in a report.

Renders a synthetic camera bag (``ros/synthetic_bag.py``) and replays it with ``ppd-bag-replay``'s machinery
(``ros/replay.py``): depth_node started as a subprocess in the metric ``sparse_topic`` mode (the
bundled model unless official files are given), each frame published over DDS with a simulated sparse
LiDAR (``ros/simulated_lidar.py``), paced (the next once the previous one's outputs have arrived), every
output recorded to ``depth_bag/``, and both bags read back into ``report/``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ..inference.checkpoints import SEMANTICS_TYPES
from ..ros.bag_io import CameraTopics, camera_frames
from ..ros.replay import replay_bag
from ..ros.replayer import ReplayOptions
from ..ros.simulated_lidar import LIDAR_ROWS, with_lidar
from ..ros.synthetic_bag import synthetic_camera_bag
from .cli import image_size, positive_int, target_area

SOURCE_TOPICS = CameraTopics(image="/camera/image", camera_info="/camera/camera_info", depth="/camera/depth_gt",
                             pose="/camera/pose")
"""The topics ``synthetic_camera_bag`` writes."""
NODE_PARAMETERS = {"depth_mode": "sparse_topic", "input_reliability": "reliable",
                   "output_resolution": "input", "publish_points": True, "points_xyzrgb": True}
TIMEOUT_S = 120.0
"""Longest wait for the node to start (official files load slowly on a CPU) and for a frame's outputs, s."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppd-demo", description="Depth for a synthetic camera bag through "
                                     "the ROS 2 node over DDS, recorded to a bag and scored in a report.")
    parser.add_argument("--out", type=Path, required=True, help="output folder: camera_bag/, depth_bag/, report/")
    parser.add_argument("--frames", type=positive_int, default=24, help="frames to render (default: 24)")
    parser.add_argument("--size", type=image_size, default=(192, 256), help="WIDTHxHEIGHT (default: 256x192)")
    parser.add_argument("--seed", type=int, default=3, help="scene and camera-path seed (default: 3)")
    parser.add_argument("--checkpoint", type=Path, help="official ppd.pth or ppd_moge.pth (default: bundled model)")
    parser.add_argument("--semantics", type=Path, help="its semantics encoder file; given with --checkpoint")
    parser.add_argument("--semantics-type", choices=SEMANTICS_TYPES, default="da2", help="default: da2")
    parser.add_argument("--target-area", type=target_area, help="processing area, pixels (default: the node's)")
    return parser


def node_parameters(args: argparse.Namespace) -> dict[str, object]:
    """The depth_node parameters: ``NODE_PARAMETERS`` plus the model files and processing area given."""
    parameters = dict(NODE_PARAMETERS)
    if args.checkpoint:
        parameters.update(checkpoint=str(args.checkpoint), semantics=str(args.semantics),
                          semantics_type=args.semantics_type)
    if args.target_area:
        parameters["target_area"] = args.target_area
    return parameters


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.checkpoint is None) != (args.semantics is None):
        parser.error("give --checkpoint and --semantics together (official files), or neither (bundled model)")
    for path in (args.checkpoint, args.semantics):
        if path is not None and not path.is_file():
            parser.error(f"no such file: {path}")
    height, width = args.size
    camera_bag = args.out / "camera_bag"
    for name in ("camera_bag", "depth_bag", "report"):
        shutil.rmtree(args.out / name, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"rendering {args.frames} frames at {width}x{height} (seed {args.seed}) -> {camera_bag}", flush=True)
    synthetic_camera_bag(camera_bag, args.frames, height, width, args.seed)
    model = f"the given files {args.checkpoint} + {args.semantics}" if args.checkpoint else "the bundled model"
    notes = {"source": f"synthetic bag, {args.frames} frames at {width}x{height}, seed {args.seed}; simulated "
                       f"{LIDAR_ROWS}-row LiDAR on sparse_depth", "model files": model}
    code = replay_bag(camera_bag, SOURCE_TOPICS, args.out, ReplayOptions(paced=True, timeout_s=TIMEOUT_S),
                      node_parameters(args), (with_lidar(frame) for frame in camera_frames(camera_bag, SOURCE_TOPICS)),
                      notes, prog="ppd-demo")
    print(f"ppd-demo: done in {time.perf_counter() - start:.0f} s (exit status {code}): {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
