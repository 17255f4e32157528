"""``ppd-demo``: the whole pipeline on a synthetic camera bag, ending in a report.

Renders a synthetic camera bag (``ros/synthetic_bag.py``: one room, the camera moving along an arc) and
replays it with ``ppd-bag-replay``'s machinery (``ros/replay.py``): depth_node started as a subprocess in the
metric ``sparse_topic`` mode (the bundled models unless official files are given), each frame published over
DDS with a simulated sparse LiDAR (``ros/simulated_lidar.py``), paced (the next once the previous one's outputs
have arrived), every output recorded to ``depth_bag/``, and both bags read back into ``report/``.

``--mode video`` runs the node in video mode (PPVD streaming); ``--mode both`` replays the same bag through
the node in image mode, then in video mode (``image/`` and ``video/``, each with its ``depth_bag/`` and
``report/``), and sets the two side by side in ``report/`` (``evaluation/sequence.write_comparison_report``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ..evaluation.report import markdown_table
from ..evaluation.sequence import comparison_rows, write_comparison_report
from ..inference.checkpoints import SEMANTICS_TYPES, CheckpointError
from ..inference.loader import ModelRequest, model_files
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
MODES = ("image", "video", "both")
FRAMES = {"image": 24, "video": 48, "both": 48}
"""Default frames to render per mode: video mode gets a longer, smoother clip (the same arc in more frames),
so that its stream promotes several keyframes."""
OUTPUTS = ("camera_bag", "depth_bag", "report", "image", "video")
"""What a run writes in ``--out`` (an earlier run's are removed first)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppd-demo", description="Depth for a synthetic camera bag through "
                                     "the ROS 2 node over DDS, recorded to a bag and scored in a report.")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: camera_bag/, depth_bag/, report/ (--mode both: image/, video/, report/)")
    parser.add_argument("--mode", choices=MODES, default="image",
                        help="the node's mode: image (PPD), video (PPVD streaming), or both, one after the other, "
                             "in one side-by-side report (default: image)")
    parser.add_argument("--frames", type=positive_int,
                        help=f"frames to render (default: {FRAMES['image']}; video and both: {FRAMES['video']})")
    parser.add_argument("--size", type=image_size, default=(192, 256), help="WIDTHxHEIGHT (default: 256x192)")
    parser.add_argument("--seed", type=int, default=3, help="scene and camera-path seed (default: 3)")
    parser.add_argument("--checkpoint", type=Path, help="image mode: official ppd.pth or ppd_moge.pth "
                        "(default: the bundled model)")
    parser.add_argument("--semantics", type=Path, help="its semantics encoder file; given with --checkpoint")
    parser.add_argument("--semantics-type", choices=SEMANTICS_TYPES, default="da2", help="default: da2")
    parser.add_argument("--target-area", type=target_area,
                        help="image mode: processing area, pixels (default: the node's)")
    parser.add_argument("--video-checkpoint", type=Path,
                        help="video mode: official ppvd.pth (default: the bundled video model)")
    parser.add_argument("--video-semantics", type=Path,
                        help="video mode: Pi3 model.safetensors; given with --video-checkpoint")
    return parser


def argument_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments (pairs given together, files that exist, each mode's options used by a
    run of that mode, the bundled video model installed when needed), or None."""
    if (args.checkpoint is None) != (args.semantics is None):
        return "give --checkpoint and --semantics together (official files), or neither (bundled model)"
    if (args.video_checkpoint is None) != (args.video_semantics is None):
        return "give --video-checkpoint and --video-semantics together (official files), or neither (bundled model)"
    if args.mode == "video" and (args.checkpoint or args.target_area):
        return ("--checkpoint, --semantics and --target-area are for image mode: use --video-checkpoint and "
                "--video-semantics with --mode video")
    if args.mode == "image" and args.video_checkpoint:
        return "--video-checkpoint and --video-semantics need --mode video or both"
    for path in (args.checkpoint, args.semantics, args.video_checkpoint, args.video_semantics):
        if path is not None and not path.is_file():
            return f"no such file: {path}"
    if args.mode != "image" and args.video_checkpoint is None:
        try:
            model_files(ModelRequest(video=True))
        except CheckpointError as error:
            return str(error)
    return None


def given_files(args: argparse.Namespace, mode: str) -> tuple[Path | None, Path | None]:
    """The (checkpoint, semantics) files given for a run in ``mode`` (image or video); Nones: the bundled model."""
    return (args.video_checkpoint, args.video_semantics) if mode == "video" else (args.checkpoint, args.semantics)


def node_parameters(args: argparse.Namespace, mode: str) -> dict[str, object]:
    """The depth_node parameters of a run in ``mode`` (image or video): ``NODE_PARAMETERS``, the mode, and the
    model files and (image mode) encoder type and processing area when given."""
    parameters = {**NODE_PARAMETERS, "mode": mode}
    checkpoint, semantics = given_files(args, mode)
    if checkpoint:
        parameters.update(checkpoint=str(checkpoint), semantics=str(semantics))
    if mode == "image" and checkpoint:
        parameters["semantics_type"] = args.semantics_type
    if mode == "image" and args.target_area:
        parameters["target_area"] = args.target_area
    return parameters


def model_note(args: argparse.Namespace, mode: str) -> str:
    """The report's "model files" line of a run in ``mode``."""
    checkpoint, semantics = given_files(args, mode)
    if checkpoint:
        return f"the given files {checkpoint} + {semantics}"
    return "the bundled video model" if mode == "video" else "the bundled model"


def render(args: argparse.Namespace) -> tuple[Path, str]:
    """Remove an earlier run's outputs from ``--out`` and render the camera bag there; its path and description."""
    frames = args.frames or FRAMES[args.mode]
    height, width = args.size
    camera_bag = args.out / "camera_bag"
    for name in OUTPUTS:
        shutil.rmtree(args.out / name, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"rendering {frames} frames at {width}x{height} (seed {args.seed}) -> {camera_bag}", flush=True)
    synthetic_camera_bag(camera_bag, frames, height, width, args.seed)
    return camera_bag, (f"synthetic bag, {frames} frames at {width}x{height}, seed {args.seed}; simulated "
                        f"{LIDAR_ROWS}-row LiDAR on sparse_depth")


def replay_modes(args: argparse.Namespace, camera_bag: Path, source: str) -> int:
    """Replay ``camera_bag`` through the node in ``--mode``'s modes (both: image into ``image/``, then video
    into ``video/``, and the side-by-side report); the exit status of the first replay that fails, else 0."""
    runs = ("image", "video") if args.mode == "both" else (args.mode,)
    outs = {mode: args.out / mode if args.mode == "both" else args.out for mode in runs}
    for mode in runs:
        print(f"ppd-demo: {mode} mode -> {outs[mode]}", flush=True)
        code = replay_bag(camera_bag, SOURCE_TOPICS, outs[mode], ReplayOptions(paced=True, timeout_s=TIMEOUT_S),
                          node_parameters(args, mode),
                          (with_lidar(frame) for frame in camera_frames(camera_bag, SOURCE_TOPICS)),
                          {"source": source, "mode": mode, "model files": model_note(args, mode)}, prog="ppd-demo")
        if code:
            return code
    if args.mode == "both":
        summaries = write_comparison_report(args.out / "report", "ppd-demo: image and video mode on one synthetic bag",
                                            {mode: outs[mode] / "report" for mode in runs})
        print(markdown_table(("mean over frames", *runs), comparison_rows(summaries)), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = argument_error(args)
    if problem:
        parser.error(problem)
    start = time.perf_counter()
    code = replay_modes(args, *render(args))
    print(f"ppd-demo: done in {time.perf_counter() - start:.0f} s (exit status {code}): {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
