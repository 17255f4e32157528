"""``ppd-export``: ONNX graphs of a PPD model (semantics encoder + one DiT step), checked in ONNX Runtime.

Exports both graphs (``inference.onnx_export``: dynamo exporter, dynamic N, H, W up to ``--max-size``)
into ``--out``, named by the weights' fingerprint, dtype, opset, shape range and torch version (an
existing matching export is reused), then runs each graph in ONNX Runtime (CPU) at every ``--check-sizes``
size (batch 2) and compares with PyTorch (float32 eager on the CPU), printing a table. Where TensorRT
is installed it also builds the engines (``TensorRTBackend``, engine cache in ``--out``).

Tolerances (max abs diff vs float32 PyTorch; semantics and velocities are O(1)-O(10) values):

    fp32  DiT step 1e-4, encoder 2e-3   measured on the bundled model: DiT <= 7e-6; encoder <= 5e-4,
                                        almost all of it from ORT's antialiased Resize (MoGe-2 encoder),
                                        which differs from PyTorch's by up to 7e-5 on the [0, 1] image
    fp16  DiT step 2e-2, encoder 2e-2   measured: 2.7e-3 .. 4.1e-3 (128x96 .. 592x592)

Exit status: 0 all graphs within tolerance, 1 some diff above it, 2 bad arguments, an unusable --out or
missing checkpoints (checked before the model loads).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..inference.backends.base import BackendOptions, BackendUnavailable
from ..inference.backends.engine_cache import make_cache_folder
from ..inference.backends.profiles import derived_options
from ..inference.checkpoints import CheckpointError, load_ppd_dit, load_semantics_encoder
from ..inference.loader import BUNDLED_WARNING, model_files
from ..inference.onnx_export import exported_graphs
from ..inference.preprocess import DEFAULT_TARGET_AREA
from ..model.flow import T
from .cli import add_threads_argument, image_size, non_negative_float, positive_int
from .model_arguments import add_model_arguments, requested_model, torch_threads

TOLERANCES = {("encoder", "fp32"): 2e-3, ("dit_step", "fp32"): 1e-4,
              ("encoder", "fp16"): 2e-2, ("dit_step", "fp16"): 2e-2}
"""(graph, dtype) -> largest accepted max abs diff vs float32 PyTorch (see the module docstring)."""
CHECK_BATCH = 2


def image_sizes(text: str) -> list[tuple[int, int]]:
    """argparse type: comma-separated ``WIDTHxHEIGHT`` sizes -> [(height, width), ...]."""
    return [image_size(part.strip()) for part in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    tolerances = ", ".join(f"{graph} {dtype} {tol:g}" for (graph, dtype), tol in TOLERANCES.items())
    parser = argparse.ArgumentParser(
        prog="ppd-export",
        description="Export a PPD model's semantics encoder and DiT step to ONNX (dynamic N, H, W), check them "
        "against PyTorch in ONNX Runtime, and build TensorRT engines where TensorRT is installed. Exit status: "
        "0 ok, 1 a diff above its tolerance, 2 bad arguments or missing checkpoints.",
        epilog=f"Default tolerances (max abs diff vs float32 PyTorch): {tolerances}.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    add_model_arguments(parser)
    parser.add_argument("--dtype", choices=("fp32", "fp16", "both"), default="fp32",
                        help="graph precision (default: fp32); fp16 graphs keep float32 inputs/outputs")
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default: 18, for TensorRT 10)")
    parser.add_argument("--target-area", type=positive_int, default=DEFAULT_TARGET_AREA,
                        help="processing area the graphs and engines are made for, as the node's target_area "
                        f"(default: {DEFAULT_TARGET_AREA})")
    parser.add_argument("--max-size", type=image_size, metavar="WxH",
                        help="largest processing size the dynamic shapes cover (default: as the node derives it "
                        "from --target-area: 4:3 and 16:9 cameras in both orientations, 1184x1184 at the default "
                        "area; so the engines match the node's cache key)")
    parser.add_argument("--check-sizes", type=image_sizes, default=[(192, 256), (384, 512)], metavar="WxH[,WxH]",
                        help="sizes of the ONNX Runtime parity check (default: 256x192,512x384)")
    parser.add_argument("--tolerance", type=non_negative_float,
                        help="max abs diff accepted for every graph (default: per graph and dtype, see below)")
    parser.add_argument("--force", action="store_true", help="export again even when matching graphs exist")
    add_threads_argument(parser)
    return parser


def parity_rows(dit, encoder, paths: tuple[Path, Path], dtype: str, sizes: list[tuple[int, int]],
                seed: int = 0) -> list[tuple[str, str, str, float, float]]:
    """(graph, dtype, WxH, max abs diff, mean abs diff) of each graph in ONNX Runtime (CPU) vs PyTorch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    encoder_session, dit_session = (ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                                    for p in paths)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for height, width in sizes:
        image = torch.rand(CHECK_BATCH, 3, height, width, generator=generator)
        x = torch.cat([torch.randn(CHECK_BATCH, 1, height, width, generator=generator), image - 0.5], dim=1)
        timestep = torch.full((CHECK_BATCH,), 3 * T // 4, dtype=torch.int32)
        with torch.inference_mode():
            semantics = encoder.forward_semantics(image)
            velocity = dit(x, semantics, timestep)
        got_semantics = encoder_session.run(None, {"image": image.numpy()})[0]
        got_velocity = dit_session.run(None, {"x": x.numpy(), "semantics": semantics.numpy(),
                                              "timestep": timestep.numpy()})[0]
        for graph, got, expected in (("encoder", got_semantics, semantics), ("dit_step", got_velocity, velocity)):
            diff = np.abs(got - expected.numpy())
            rows.append((graph, dtype, f"{width}x{height}", float(diff.max()), float(diff.mean())))
    return rows


def build_engines(dit, encoder, dtypes: tuple[str, ...], options: BackendOptions) -> None:
    """TensorRT engines of the graphs in ``options.engine_file_path`` (through ``TensorRTBackend``'s engine
    cache, the shape profile of ``options``), where TensorRT is installed; moves ``dit`` and ``encoder``
    to CUDA."""
    try:
        import tensorrt  # noqa: F401
        from ..inference.backends.tensorrt_backend import TensorRTBackend
    except ImportError:
        print("TensorRT not installed: engines not built (ONNX graphs written)")
        return
    for dtype in dtypes:
        try:
            TensorRTBackend(dit.cuda(), encoder.cuda(), torch.device("cuda"), dtype, options, log=print)
        except BackendUnavailable as error:
            print(f"TensorRT engines not built ({dtype}): {error}")
            continue
        print(f"TensorRT engines ({dtype}) written to {options.engine_file_path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):  # the parity check's PyTorch and ONNX Runtime runs
        return run(args)


def run(args: argparse.Namespace) -> int:
    """``ppd-export`` with the parsed ``args``: the arguments and files checked, then export, check and build."""
    max_height, max_width = args.max_size or (0, 0)
    options = derived_options(args.target_area, max_height, max_width, engine_file_path=str(args.out),
                              force_engine_update=args.force)
    max_height, max_width = options.max_height, options.max_width
    too_big = [f"{w}x{h}" for h, w in args.check_sizes if h > max_height or w > max_width]
    if too_big:
        print(f"ppd-export: check sizes {', '.join(too_big)} exceed --max-size {max_width}x{max_height}",
              file=sys.stderr)
        return 2
    try:
        request = requested_model(args)
        if request.bundled:
            print(f"ppd-export: {BUNDLED_WARNING}", file=sys.stderr)
        request = model_files(request)
        make_cache_folder(args.out)
        dit = load_ppd_dit(request.checkpoint).eval().requires_grad_(False)
        encoder = load_semantics_encoder(request.semantics, request.semantics_type).eval().requires_grad_(False)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"ppd-export: {exc}", file=sys.stderr)
        return 2

    rows, dtypes = [], ("fp32", "fp16") if args.dtype == "both" else (args.dtype,)
    for dtype in dtypes:
        start = time.perf_counter()
        paths = exported_graphs(dit, encoder, args.out, dtype=dtype, opset=args.opset, max_height=max_height,
                                max_width=max_width, force=args.force, log=print)
        print(f"{dtype} graphs ready in {time.perf_counter() - start:.1f} s: {paths[0].name}, {paths[1].name}")
        rows += parity_rows(dit, encoder, paths, dtype, args.check_sizes)
    build_engines(dit, encoder, dtypes, options)  # moves the modules to CUDA

    print(f"\n{'graph':<9} {'dtype':<5} {'size':>9} {'max abs diff':>13} {'mean abs diff':>14} {'tolerance':>10}  ok")
    failed = 0
    for graph, dtype, size, max_diff, mean_diff in rows:
        tolerance = args.tolerance if args.tolerance is not None else TOLERANCES[graph, dtype]
        ok = max_diff <= tolerance
        failed += not ok
        print(f"{graph:<9} {dtype:<5} {size:>9} {max_diff:>13.2e} {mean_diff:>14.2e} {tolerance:>10.1e}  "
              f"{'yes' if ok else 'NO'}")
    if failed:
        print(f"ppd-export: {failed} check(s) above tolerance", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
