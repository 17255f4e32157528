"""``ppd-bag-eval``: the node's per-frame processing over recorded bags, scored against ground-truth depth.

Per bag (``ros/bag_evaluation.py``): each image through depth_node's own path (or its video stream), the
outputs to a new bag and the depth to a report (metrics.json, frames.csv, report.html). Several bags run
in a process pool, or on a Ray cluster with ``--ray`` (``bag_eval_runners.py``), and get one aggregated
report.

Exit status: 0 every bag evaluated; 1 a bag failed while processing; 2 bad arguments or an unusable bag
(missing or mistyped topic, unreadable or corrupt file, no images in range); 130 Ctrl-C, 143 SIGTERM (each
bag's output bag is closed and valid, its report written and marked incomplete).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..ros.bag_io import STORAGES, CameraTopics
from .cli import add_threads_argument, non_negative_float, parameter_assignment, positive_int

if TYPE_CHECKING:
    from ..ros.parameters import NodeSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-bag-eval", description="Run depth_node's processing over rosbag2 bags (sqlite3 or MCAP) offline: "
        "a depth bag and a report scored against the bags' ground-truth depth.")
    parser.add_argument("bags", nargs="+", metavar="BAG_OR_DIR_OR_GLOB",
                        help="a bag (folder with metadata.yaml), a folder of bags, or a glob")
    parser.add_argument("--out", type=Path, required=True, help="output folder: <bag>/{depth_bag,metrics.json,"
                        "frames.csv,report.html}, and report.html over all bags when there are several")
    topics = parser.add_argument_group("topics")
    topics.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    topics.add_argument("--camera-info-topic",
                        help="sensor_msgs/CameraInfo (needed unless -p intrinsics_source:=moge2)")
    topics.add_argument("--depth-topic", help="ground-truth depth, sensor_msgs/Image 32FC1 (m) or 16UC1 (mm), "
                        "registered to the camera, any resolution (without it nothing is scored)")
    topics.add_argument("--sparse-topic", help="metric sensor depth for -p depth_mode:=sparse_topic")
    topics.add_argument("--pose-topic", help="camera poses for the temporal alignment error: PoseStamped, "
                        "TransformStamped, or tf2_msgs/TFMessage with --pose-frames")
    topics.add_argument("--pose-frames", nargs=2, metavar=("PARENT", "CHILD"),
                        help="the transform to take from a tf topic")
    selection = parser.add_argument_group("frames")
    selection.add_argument("--tolerance-ms", type=non_negative_float, default=5.0,
                           help="largest stamp difference of a match between topics (default: 5)")
    selection.add_argument("--start", type=non_negative_float, metavar="S",
                           help="first image: seconds after the bag's start")
    selection.add_argument("--end", type=non_negative_float, metavar="S",
                           help="last image: seconds after the bag's start")
    selection.add_argument("--stride", type=positive_int, default=1, help="every N-th image (default: 1)")
    node = parser.add_argument_group("node parameters")
    node.add_argument("--params-file", type=Path, help="ROS 2 parameters YAML (as config/depth.yaml)")
    node.add_argument("-p", dest="params", type=parameter_assignment, action="append", default=[], metavar="NAME:=VALUE",
                      help="a node parameter, after the params file (repeatable)")
    run = parser.add_argument_group("running")
    run.add_argument("--jobs", type=positive_int, help="bags evaluated in parallel (default: min(bags, CPUs))")
    run.add_argument("--ray", metavar="ADDRESS", help="spread the bags over this existing Ray cluster (e.g. 'auto' "
                     "or 'host:6379'); every node needs this package, and the bags and --out at the same paths")
    run.add_argument("--storage", choices=tuple(STORAGES), default="sqlite3",
                     help="of the output bags (default: sqlite3)")
    add_threads_argument(run, default=None, default_text="the node parameter torch_threads, 1; per bag")
    return parser


def _argument_error(args: argparse.Namespace, settings: NodeSettings) -> str | None:
    """What is inconsistent between the arguments and the node parameters, or None."""
    if settings.intrinsics_source == "camera_info" and not args.camera_info_topic:
        return "give --camera-info-topic, or -p intrinsics_source:=moge2 (needs a MoGe-2 model)"
    if (settings.depth_mode == "sparse_topic") != bool(args.sparse_topic):
        return "--sparse-topic and -p depth_mode:=sparse_topic go together"
    if args.pose_frames and not args.pose_topic:
        return "--pose-frames needs --pose-topic"
    if args.start is not None and args.end is not None and args.end < args.start:
        return f"--end {args.end} is before --start {args.start}"
    return None


def _print_result(result: dict, index: int, total: int) -> None:
    """One line per finished bag (the ``index``-th of ``total``), then its headline metrics."""
    print(f"[{index}/{total}] {result['name']}: {result['status']}, {result['frames']} frames in "
          f"{result['seconds']:.1f} s" + (f": {result['message']}" if result["message"] else ""), flush=True)
    if result["summary"]:
        frames = result["summary"]["frames"]
        print(f"  {frames['scored']}/{frames['total']} processed frames scored, {frames['metric']} metric; "
              f"model {result['model']}; report {result['report']}")
        _print_table(result["summary"])


def _print_table(summary: dict) -> None:
    from ..evaluation.report import markdown_table
    from ..evaluation.sequence import headline_rows
    table = markdown_table(("mean over frames", "AbsRel", "delta1", "edge-aware chamfer (m)"), headline_rows(summary))
    print("\n".join(f"  {line}" for line in table.splitlines()), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The libraries (torch, scikit-learn) load after parsing: --help and argument errors answer at once.
    from ..ros.bag_evaluation import EXIT_CODES, BagJob, find_bags, output_dirs, write_aggregate
    from ..ros.interrupts import exit_status, interrupt, stop_signals
    from ..ros.parameter_files import node_parameters
    from .bag_eval_runners import run_bags
    from .model_arguments import torch_threads
    try:
        settings = node_parameters(args.params_file, args.params)
        bags = find_bags(args.bags)
        outs = output_dirs(bags, args.out)
    except ValueError as error:
        print(f"ppd-bag-eval: error: {error}", file=sys.stderr)
        return 2
    problem = _argument_error(args, settings)
    if problem:
        print(f"ppd-bag-eval: error: {problem}", file=sys.stderr)
        return 2
    topics = CameraTopics(image=args.image_topic, camera_info=args.camera_info_topic, depth=args.depth_topic,
                          sparse=args.sparse_topic, pose=args.pose_topic,
                          pose_frames=tuple(args.pose_frames) if args.pose_frames else None)
    threads = (settings.torch_threads if args.threads is None else args.threads) or None
    jobs = [BagJob(bag, out, topics, settings, round(args.tolerance_ms * 1e6), args.start, args.end, args.stride,
                   args.storage, threads) for bag, out in zip(bags, outs)]
    if not settings.checkpoint:
        print(f"ppd-bag-eval: no checkpoint set: the bundled tiny {'video ' if settings.mode == 'video' else ''}"
              "model (trained on synthetic rooms only)", file=sys.stderr)
    if not args.depth_topic:
        print("ppd-bag-eval: no --depth-topic: frames are processed and recorded but not scored", file=sys.stderr)
    finished = itertools.count(1)

    def report(result: dict) -> None:
        _print_result(result, next(finished), len(jobs))

    workers = min(args.jobs or os.cpu_count() or 1, len(jobs))
    # SIGTERM raises KeyboardInterrupt as Ctrl-C does; torch's thread count is restored after (in-process bags)
    with stop_signals(interrupt) as received, torch_threads(None):
        try:
            results = run_bags(jobs, workers, args.ray, report)
        except ConnectionError as error:
            print(f"ppd-bag-eval: error: cannot connect to the Ray cluster at {args.ray}: {error}", file=sys.stderr)
            return 2
        interrupted = False
        if len(jobs) > 1:
            aggregate, interrupted = write_aggregate(args.out, f"ppd-bag-eval: {len(jobs)} bags", results)
            print(f"all bags ({aggregate['frames']['scored']} scored frames): {args.out / 'report.html'}")
            _print_table(aggregate)
    for result in results:
        if result["status"] != "ok":
            print(f"ppd-bag-eval: {result['name']}: {result['status']}: {result['message']}", file=sys.stderr)
    code = max(EXIT_CODES["interrupted" if interrupted else "ok"], *(EXIT_CODES[r["status"]] for r in results))
    return exit_status(received) if code == EXIT_CODES["interrupted"] else code


if __name__ == "__main__":
    sys.exit(main())
