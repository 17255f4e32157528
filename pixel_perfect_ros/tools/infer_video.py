"""``ppd-infer-video``: offline Pixel-Perfect Video Depth on a video file or a folder of frames.

Writes ``<name>_depth.npz`` (``depth``: (L, H, W) float32 normalised log-depth, aligned across windows)
and ``<name>_depth.mp4`` (inferno, near = bright, one min/max over the whole clip; the video's fps, or
10 fps for a folder). Without ``--checkpoint`` and ``--semantics``: the bundled tiny video model (synthetic
rooms only). Exit status: 0 written, 1 written but some frames' depth has almost no valid
pixels (``geometry.validity``; the message names them), 2 bad arguments, missing or wrong checkpoints,
unreadable input (checked before the model loads).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..evaluation.depth_io import colorize
from ..inference.checkpoints import CheckpointError
from ..inference.loader import ModelRequest, load_model, model_files
from ..inference.video_windows import num_windows
from .cli import add_threads_argument, positive_int, torch_device_name
from .infer import IMAGE_SUFFIXES, depth_problem
from .model_arguments import torch_threads

FOLDER_FPS = 10.0
"""Frame rate of the depth video written for a folder of images."""

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-infer-video",
        description="Pixel-Perfect Video Depth: writes aligned normalised log-depth (.npz) and a depth video (.mp4).",
    )
    parser.add_argument("input", type=Path, metavar="VIDEO_OR_DIR", help="a video file or a folder of frames")
    parser.add_argument("--checkpoint", type=Path,
                        help="official ppvd.pth (default: the bundled synthetic-world video model)")
    parser.add_argument("--semantics", type=Path,
                        help="Pi3 model.safetensors (pi3.safetensors); given with --checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--steps", type=positive_int, default=4, help="Euler steps (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="initial-noise seed (default: 0)")
    parser.add_argument("--device", type=torch_device_name, default="cpu",
                        help="torch device: cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--max-frames", type=positive_int, help="use only the first N frames")
    add_threads_argument(parser)
    return parser


def read_frames(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Frames of a video file or of the images (by suffix, sorted) in a folder.

    Returns:
        (L, H, W, 3) uint8 RGB, and the frame rate (the video's, ``FOLDER_FPS`` for folders).

    Raises:
        ValueError: naming the input when it cannot be read, holds no frames, or frames differ in size.
    """
    frames = []
    if path.is_dir():
        fps = FOLDER_FPS
        for image_path in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            if max_frames is not None and len(frames) == max_frames:
                break
            bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{image_path} is not a readable image")
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    else:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f"{path} is not a readable video")
        fps = capture.get(cv2.CAP_PROP_FPS) or FOLDER_FPS
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
    if not frames:
        raise ValueError(f"no frames in {path}")
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"the frames of {path} differ in size")
    return np.stack(frames), fps


def write_depth_video(depth: np.ndarray, path: Path, fps: float) -> None:
    """(L, H, W) normalised log-depth -> mp4 (mp4v), inferno with near bright, one range for the clip."""
    finite = depth[np.isfinite(depth)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    height, width = depth.shape[1:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"could not open {path} for writing")
    for frame in depth:
        writer.write(colorize(-frame, -hi, -lo, cv2.COLORMAP_INFERNO))
    writer.release()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """``ppd-infer-video`` with the parsed ``args``: the input and files checked, then the model loaded and run."""
    if not args.input.exists():
        print(f"ppd-infer-video: input not found: {args.input}", file=sys.stderr)
        return 2
    request = ModelRequest(checkpoint=str(args.checkpoint or ""), semantics=str(args.semantics or ""), video=True,
                           steps=args.steps, seed=args.seed, device=args.device)
    try:
        model_files(request)  # before reading the frames: a missing file is the likelier mistake
        frames, fps = read_frames(args.input, args.max_frames)
        args.out.mkdir(parents=True, exist_ok=True)
        loaded = load_model(request)
    except (CheckpointError, ValueError, RuntimeError, OSError) as exc:
        print(f"ppd-infer-video: {exc}", file=sys.stderr)
        return 2
    for warning in loaded.warnings:
        print(f"ppd-infer-video: {warning}", file=sys.stderr)
    model = loaded.model

    with tqdm(total=num_windows(len(frames)), desc="ppd-infer-video", unit="window") as bar:
        prediction = model(frames, progress=lambda done, total: bar.update(done - bar.n))
    stem = args.input.stem if args.input.is_file() else args.input.resolve().name
    np.savez(args.out / f"{stem}_depth.npz", depth=prediction.depth.astype(np.float32))
    write_depth_video(prediction.depth, args.out / f"{stem}_depth.mp4", fps)
    print(f"ppd-infer-video: wrote {len(frames)} depth frames of {args.input} to {args.out}", file=sys.stderr)
    problems = [(index, problem) for index, problem in enumerate(map(depth_problem, prediction.depth)) if problem]
    if problems:
        print(f"ppd-infer-video: {len(problems)} of {len(frames)} frames failed (the first, frame {problems[0][0]}: "
              f"{problems[0][1]})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
