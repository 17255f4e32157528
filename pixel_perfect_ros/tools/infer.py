"""``ppd-infer``: offline Pixel-Perfect Depth on images and folders of images.

Writes, per image, ``<name>_depth.npy`` (float32 normalised log-depth at the input resolution),
``<name>_depth16.png`` (the same on a fixed 16-bit scale, see ``depth_io.PNG16_RANGE``) and
``<name>_depth_color.png``. Exit status: 0 all written, 1 some images failed (the others are written),
2 bad arguments, missing or wrong checkpoints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from ..evaluation.depth_io import write_depth
from ..inference import bundled
from ..inference.backends import BACKENDS, BackendOptions
from ..inference.checkpoints import CheckpointError
from ..inference.loader import load_model
from ..inference.preprocess import DEFAULT_TARGET_AREA
from ..inference.sampling import DTYPES
from .cli import positive_int
from .model_arguments import add_model_arguments, requested_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-infer",
        description="Pixel-Perfect Depth on images: writes normalised log-depth (.npy, 16-bit PNG, colour PNG).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="images or folders of images")
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--steps", type=positive_int, default=4, help="Euler steps (default: 4)")
    parser.add_argument("--target-area", type=positive_int,
                        help=f"processing area in pixels (default: {DEFAULT_TARGET_AREA} = 1024x768 for official "
                        f"checkpoints, {bundled.TARGET_AREA} for the bundled model)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="precision (default: fp32)")
    parser.add_argument("--seed", type=int, default=0, help="initial-noise seed (default: 0)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="what runs the model (default: auto = torch_cuda_graph on CUDA, torch on CPU); one "
                        "that cannot start falls back to torch, saying why")
    parser.add_argument("--engine-dir", type=Path,
                        help="folder of ONNX graphs and TensorRT engines (default: ~/.cache/pixel_perfect_ros)")
    parser.add_argument("--force-engine-update", action="store_true",
                        help="export and build the graphs and engines again even when cached ones match")
    return parser


def collect_images(inputs: list[Path]) -> list[Path]:
    """Files as given, and the image files (by suffix, sorted) directly inside given folders.

    Raises:
        FileNotFoundError: naming an input that does not exist.
    """
    images = []
    for path in inputs:
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return images


def unique_stems(images: list[Path]) -> list[str]:
    """Output name per image: its stem, with a numeric suffix where two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in images:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        stems.append(path.stem if count == 0 else f"{path.stem}_{count}")
    return stems


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        images = collect_images(args.inputs)
    except FileNotFoundError as exc:
        print(f"ppd-infer: {exc}", file=sys.stderr)
        return 2
    if not images:
        print(f"ppd-infer: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, args.inputs))}",
              file=sys.stderr)
        return 2
    try:
        loaded = load_model(requested_model(
            args, steps=args.steps, target_area=args.target_area, device=args.device, dtype=args.dtype,
            seed=args.seed, backend=args.backend,
            backend_options=BackendOptions(engine_file_path=str(args.engine_dir or ""),
                                           force_engine_update=args.force_engine_update)))
    except (CheckpointError, ValueError, RuntimeError) as exc:
        print(f"ppd-infer: {exc}", file=sys.stderr)
        return 2
    for warning in loaded.warnings:
        print(f"ppd-infer: {warning}", file=sys.stderr)
    model = loaded.model

    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path, stem in zip(tqdm(images, desc="ppd-infer", unit="img"), unique_stems(images)):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            failed.append(f"{path}: not a readable image")
            continue
        prediction = model(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        write_depth(prediction.depth, args.out, stem)
    for message in failed:
        print(f"ppd-infer: skipped {message}", file=sys.stderr)
    print(f"ppd-infer: wrote {len(images) - len(failed)} of {len(images)} depth maps to {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
