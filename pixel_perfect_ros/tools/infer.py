"""``ppd-infer``: offline Pixel-Perfect Depth on images and folders of images.

Writes, per image, ``<name>_depth.npy`` (float32 normalised log-depth at the input resolution),
``<name>_depth16.png`` (the same on a fixed 16-bit scale, see ``depth_io.PNG16_RANGE``) and
``<name>_depth_color.png``; nothing for an image that cannot be read or whose depth has almost no valid
pixels (``geometry.validity``). With ``--samples N`` (N >= 2) the depth is the mean of N diffusion samples
and ``<name>_uncertainty.npy`` / ``<name>_uncertainty.png`` hold their per-pixel relative spread
(``geometry.uncertainty``). Exit status: 0 all written, 1 some images failed (the others are
written), 2 bad arguments (checked before the model loads), missing or wrong checkpoints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..evaluation.depth_io import colorize, write_depth
from ..geometry.decoding import RelativeDecoder
from ..geometry.uncertainty import published_uncertainty, sample_spread
from ..geometry.validity import MIN_VALID_FRACTION, valid_fraction
from ..inference import bundled
from ..inference.backends import BACKENDS, BackendOptions
from ..inference.checkpoints import CheckpointError
from ..inference.loader import load_model, model_files
from ..inference.pipeline import MAX_SAMPLES, check_samples
from ..inference.preprocess import DEFAULT_TARGET_AREA
from ..inference.sampling import DTYPES
from .cli import add_threads_argument, positive_int, target_area, torch_device_name
from .model_arguments import add_model_arguments, requested_model, torch_threads

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def sample_count(text: str) -> int:
    """argparse type: ``--samples``, an integer from 1 to ``pipeline.MAX_SAMPLES``."""
    try:
        return check_samples(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_SAMPLES}, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-infer",
        description="Pixel-Perfect Depth on images: writes normalised log-depth (.npy, 16-bit PNG, colour PNG).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="images or folders of images")
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--steps", type=positive_int, default=4, help="Euler steps (default: 4)")
    parser.add_argument("--target-area", type=target_area,
                        help=f"processing area in pixels (default: {DEFAULT_TARGET_AREA} = 1024x768 for official "
                        f"checkpoints, {bundled.TARGET_AREA} for the bundled model)")
    parser.add_argument("--device", type=torch_device_name, default="cpu",
                        help="torch device: cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="precision (default: fp32)")
    parser.add_argument("--seed", type=int, default=0, help="initial-noise seed (default: 0)")
    parser.add_argument("--samples", type=sample_count, default=1, metavar="N",
                        help=f"depth samples per image, 1 to {MAX_SAMPLES} (default: 1). With N >= 2 the depth is "
                        "their mean and <name>_uncertainty.npy/.png hold their relative spread; costs N DiT "
                        "passes per step (batched), one semantics pass")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="what runs the model (default: auto = torch_cuda_graph on CUDA, torch on CPU); one "
                        "that cannot start falls back to torch, saying why")
    parser.add_argument("--engine-dir", type=Path,
                        help="folder of ONNX graphs and TensorRT engines (default: ~/.cache/pixel_perfect_ros)")
    parser.add_argument("--force-engine-update", action="store_true",
                        help="export and build the graphs and engines again even when cached ones match")
    add_threads_argument(parser)
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


def depth_problem(depth: np.ndarray) -> str | None:
    """Why a predicted normalised log-depth map is not written: too few valid pixels in the relative depth the
    node would publish for it (``exp(depth)`` finite and > 0, ``geometry.validity``); None when it is fine."""
    share = valid_fraction(RelativeDecoder()(depth))
    if share >= MIN_VALID_FRACTION:
        return None
    return (f"the model produced almost no valid depth ({100 * share:.1f} % of the pixels, below "
            f"{100 * MIN_VALID_FRACTION:g} %; NaN or inf: a broken checkpoint, or an fp16 overflow?)")


def decoded_uncertainty(samples: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(H0, W0) float32 uncertainty of the written ``depth`` (normalised log-depth, the samples' mean)
    from its (N, H0, W0) ``samples``: ``geometry.uncertainty.published_uncertainty`` of the depth decoded
    as ``depth_problem`` decodes it (``RelativeDecoder``: not metric, so the relative spread,
    std(exp(sample)) / exp(depth), unitless); NaN exactly where that decoded depth is invalid."""
    decoder = RelativeDecoder()
    return published_uncertainty(sample_spread(decoder, samples), decoder(depth), decoder.is_metric)


def colorize_uncertainty(uncertainty: np.ndarray) -> np.ndarray:
    """(H, W) uncertainty -> (H, W, 3) uint8 BGR image, inferno from 0 (dark) to the image's largest finite
    value (bright), +inf (samples disagreeing on validity) brightest, NaN black (as the depth colour image)."""
    finite = np.isfinite(uncertainty)
    hi = float(uncertainty[finite].max()) if finite.any() else 0.0
    hi = hi if hi > 0 else 1.0
    return colorize(np.where(np.isposinf(uncertainty), hi, uncertainty), 0.0, hi, cv2.COLORMAP_INFERNO)


def write_uncertainty(uncertainty: np.ndarray, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>_uncertainty.npy`` (float32) and ``<stem>_uncertainty.png`` (``colorize_uncertainty``)."""
    paths = [out_dir / f"{stem}_uncertainty.npy", out_dir / f"{stem}_uncertainty.png"]
    np.save(paths[0], uncertainty.astype(np.float32))
    if not cv2.imwrite(str(paths[1]), colorize_uncertainty(uncertainty)):
        raise OSError(f"could not write {paths[1]}")
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """``ppd-infer`` with the parsed ``args``: the arguments and files checked, then the model loaded and run."""
    try:
        images = collect_images(args.inputs)
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                                    f"{', '.join(map(str, args.inputs))}")
        request = requested_model(
            args, steps=args.steps, target_area=args.target_area, device=args.device, dtype=args.dtype,
            seed=args.seed, backend=args.backend,
            backend_options=BackendOptions(engine_file_path=str(args.engine_dir or ""),
                                           force_engine_update=args.force_engine_update))
        model_files(request)  # the files exist, and the output folder can be made, before the slow load
        args.out.mkdir(parents=True, exist_ok=True)
        loaded = load_model(request)
        if args.samples != 1:
            loaded.model.samples = args.samples
    except (CheckpointError, ValueError, RuntimeError, OSError) as exc:
        print(f"ppd-infer: {exc}", file=sys.stderr)
        return 2
    for warning in loaded.warnings:
        print(f"ppd-infer: {warning}", file=sys.stderr)
    model = loaded.model

    failed = []
    for path, stem in zip(tqdm(images, desc="ppd-infer", unit="img"), unique_stems(images)):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            failed.append(f"{path}: not a readable image")
            continue
        prediction = model(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        problem = depth_problem(prediction.depth)
        if problem:
            failed.append(f"{path}: {problem}")
            continue
        write_depth(prediction.depth, args.out, stem)
        if prediction.samples is not None:
            write_uncertainty(decoded_uncertainty(prediction.samples, prediction.depth), args.out, stem)
    for message in failed:
        print(f"ppd-infer: skipped {message}", file=sys.stderr)
    print(f"ppd-infer: wrote {len(images) - len(failed)} of {len(images)} depth maps to {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
