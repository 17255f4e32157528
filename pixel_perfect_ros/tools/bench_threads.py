"""Time of one image through the PPD model per torch thread count, on an idle and on a loaded machine:
the measurement behind the tools' ``--threads`` default (docs/offline.md).

    python -m pixel_perfect_ros.tools.bench_threads [--threads 1,2] [--load 0,2] [--repeats 3] [--size 640x480]
        [--checkpoint ppd.pth --semantics depth_anything_v2_vitl.pth] [--target-area N]

For each load (that many busy-loop processes started here and stopped after) and thread count: one
untimed image, then the median of ``--repeats`` images, through the model as ``ppd-infer`` runs it (the
bundled model by default, at its own processing area). Exit status: 0 done, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ..inference.loader import load_model
from .cli import comma_list, image_size, median_ms, non_negative_int, positive_int, target_area
from .model_arguments import add_model_arguments, requested_model, torch_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_threads", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=comma_list(positive_int, "thread counts"), default=[1, 2],
                        help="torch thread counts (default: 1,2)")
    parser.add_argument("--load", type=comma_list(non_negative_int, "process counts"), default=[0, 2],
                        help="busy-loop processes running beside the model, per row (default: 0,2)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed images per row (default: 3)")
    parser.add_argument("--size", type=image_size, default=(480, 640), metavar="WxH",
                        help="input image size (default: 640x480)")
    add_model_arguments(parser)
    parser.add_argument("--target-area", type=target_area, help="processing area, px (default: the model's)")
    return parser


@contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """``count`` Python processes spinning on a core each while the block runs; killed after."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = load_model(requested_model(args, target_area=args.target_area)).model
    rgb = np.random.default_rng(0).integers(0, 256, (*args.size, 3), dtype=np.uint8)
    print(f"one {args.size[1]}x{args.size[0]} image, processing area {model.target_area} px, median of "
          f"{args.repeats} after one untimed\n{'load':>4} {'threads':>7} {'ms':>9}", flush=True)
    for load in args.load:
        with busy_loops(load):
            for threads in args.threads:
                with torch_threads(threads):
                    print(f"{load:>4} {threads:>7} {median_ms(lambda: model(rgb), args.repeats):>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
