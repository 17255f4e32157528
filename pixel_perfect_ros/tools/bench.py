"""Benchmark of the PPD image path per stage, for each backend, precision, size and step count.

For every configuration (backend, dtype, processing size, Euler steps) it runs one frame through the
node's stages (``ros/benchmark.py``), ``--repeats`` times after ``--warmup`` untimed runs, and prints the
median ms per stage, the speed-up over torch fp32, the ideal time at the device peak, peak memory and the
depth deviation from torch fp32 (``inference/benchmark.py``), one table per size
(``inference/benchmark_report.py``).

    ppd-bench [--sizes 1024x768,768x576,512x384] [--steps 1,2,4] [--backends torch,onnxruntime,...]
        [--dtypes fp32,fp16,bf16] [--architecture bundled|official] [--repeats 5] [--warmup 1]
        [--device cuda] [--threads N] [--engine-dir DIR] [--json PATH] [--smoke]

Defaults on CUDA: the three sizes above, the official architecture (random weights), fp32/fp16/bf16;
on a CPU: 128x96 (the bundled model's processing size), 256x192 and 512x384, the bundled tiny model,
fp32 and bf16 (when CPU autocast runs bf16).
Exit status: 0 done (unavailable or failing configurations are rows of the table); 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from ..inference.backends import BACKENDS
from ..inference.benchmark import ARCHITECTURES, build_models, cpu_bf16_works, dtype_peaks
from ..inference.benchmark_report import fastest_lines, format_tables, header_lines
from ..inference.sampling import DTYPES
from ..ros.benchmark import run_all
from .cli import add_threads_argument, comma_list, image_size, non_negative_int, positive_int, torch_device_name
from .model_arguments import torch_threads

CUDA_SIZES = ((768, 1024), (576, 768), (384, 512))
"""Default (H, W) on CUDA."""
CPU_SIZES = ((96, 128), (192, 256), (384, 512))
"""Default (H, W) on a CPU: the bundled model's own 128x96 (``bundled.TARGET_AREA``, what the node runs it at)
and larger."""
SMOKE_SIZES = ((48, 64),)


def _choice(choices):
    """argparse type: one of ``choices``."""
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppd-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=comma_list(image_size, "WIDTHxHEIGHT"), default=None,
                        help="processing sizes, WIDTHxHEIGHT multiples of 16 (default: 1024x768,768x576,512x384 "
                             "on CUDA, 128x96,256x192,512x384 on a CPU)")
    parser.add_argument("--steps", type=comma_list(positive_int, "step counts"), default=[1, 2, 4],
                        help="Euler step counts (default: 1,2,4)")
    parser.add_argument("--backends", type=comma_list(_choice(BACKENDS), "backends"), default=list(BACKENDS),
                        help=f"backends (default: all: {','.join(BACKENDS)}; torch fp32 always runs as the baseline)")
    parser.add_argument("--dtypes", type=comma_list(_choice(tuple(DTYPES)), "dtypes"), default=None,
                        help="precisions (default: fp32,fp16,bf16 on CUDA; fp32,bf16 on a CPU where autocast runs bf16)")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=None,
                        help="bundled (trained tiny model) or official (full size, random weights) "
                             "(default: official on CUDA, bundled on a CPU)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per configuration (default: 5)")
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed runs first (default: 1)")
    parser.add_argument("--device", type=torch_device_name, default=None,
                        help="torch device (default: cuda when available, else cpu)")
    add_threads_argument(parser, default=0)
    parser.add_argument("--engine-dir", default="", help="folder for exported graphs and engines (default: the backends')")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="CI-sized run: 64x48, the steps given, 1 repeat, no warm-up, small peak matmul")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line and fill the device-dependent defaults (exits with status 2 on bad values)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be a cpu or cuda device, got {args.device!r}")
    cuda = device.type == "cuda"
    if args.smoke:
        args.sizes, args.repeats, args.warmup = list(SMOKE_SIZES), 1, 0
    if args.sizes is None:
        args.sizes = list(CUDA_SIZES if cuda else CPU_SIZES)
    if args.dtypes is None:
        args.dtypes = ["fp32", "fp16", "bf16"] if cuda else ["fp32"] + (["bf16"] if cpu_bf16_works() else [])
    if args.architecture is None:
        args.architecture = "official" if cuda else "bundled"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The benchmark of the parsed ``args``: prints the tables; returns the exit status."""
    device = torch.device(args.device)
    dit, encoder = build_models(args.architecture, device)
    peaks = dtype_peaks(device, args.dtypes, matmul_size=256 if args.smoke else 2048)
    for line in header_lines(device, args.architecture, args.repeats, args.warmup, dit, encoder, peaks):
        print(line)
    sys.stdout.flush()
    rows = run_all(dit, encoder, peaks, device, sizes=args.sizes, steps=args.steps, backends=args.backends,
                   dtypes=args.dtypes, repeats=args.repeats, warmup=args.warmup, engine_dir=args.engine_dir)
    print(format_tables(rows, args.sizes))
    print()
    for line in fastest_lines(rows, args.sizes, args.steps, device, args.architecture):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "header": header_lines(device, args.architecture, args.repeats, args.warmup, dit, encoder, peaks),
            "peaks": {dtype: asdict(peak) for dtype, peak in peaks.items()},
            "rows": [asdict(row) for row in rows],
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
