"""Helpers shared by the command-line tools: argument types, the model-file arguments, benchmark timing."""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from ..inference import bundled
from ..inference.checkpoints import SEMANTICS_TYPES, download_instructions


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type accepting integers >= ``minimum`` (``what`` names them in the error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
"""argparse type: an integer >= 1."""


def image_size(text: str) -> tuple[int, int]:
    """argparse type: ``WIDTHxHEIGHT`` with both multiples of 16 -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 128x96, got {text!r}") from None
    if width < 16 or height < 16 or width % 16 or height % 16:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 16, got {text!r}")
    return height, width


non_negative_int = _int_at_least(0, "a non-negative integer")
"""argparse type: an integer >= 0."""


def _finite_float(accept: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type accepting finite floats for which ``accept`` holds (``what`` names them)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_float = _finite_float(lambda v: v > 0, "a finite number > 0")
"""argparse type: a finite float > 0."""
non_negative_float = _finite_float(lambda v: v >= 0, "a finite number >= 0")
"""argparse type: a finite float >= 0."""


def parameter_assignment(text: str) -> tuple[str, str]:
    """argparse type: ``NAME:=VALUE`` (a ROS parameter, the value as on the ros2 command line)."""
    name, separator, value = text.partition(":=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:=VALUE, got {text!r}")
    return name, value


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run, milliseconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--semantics`` and ``--semantics-type`` of the PPD image tools."""
    parser.add_argument("--checkpoint", type=Path,
                        help="official ppd.pth or ppd_moge.pth (default: the bundled synthetic-world model)")
    parser.add_argument("--semantics", type=Path,
                        help="depth_anything_v2_vitl.pth (da2) or MoGe-2 model.pt (moge2); given with --checkpoint")
    parser.add_argument("--semantics-type", choices=SEMANTICS_TYPES, default="da2",
                        help="which encoder --semantics is (default: da2)")


def resolve_model_files(args: argparse.Namespace, prog: str) -> bool:
    """Fill in the bundled model's files when neither ``--checkpoint`` nor ``--semantics`` is given (with a
    note on stderr) and check the files exist. Returns False after printing why to stderr (exit 2)."""
    if (args.checkpoint is None) != (args.semantics is None):
        print(f"{prog}: give both --checkpoint and --semantics, or neither for the bundled model", file=sys.stderr)
        return False
    if args.checkpoint is None:
        args.checkpoint, args.semantics, args.semantics_type = bundled.CHECKPOINT, bundled.SEMANTICS, bundled.SEMANTICS_TYPE
        print(f"{prog}: no checkpoint given: using the bundled tiny model trained on synthetic rooms "
              "(for real images use the official checkpoints)", file=sys.stderr)
    missing = [p for p in (args.checkpoint, args.semantics) if not p.is_file()]
    if missing:
        print(f"{prog}: checkpoint not found: {', '.join(map(str, missing))}\n"
              f"{download_instructions(missing[0].parent)}", file=sys.stderr)
        return False
    return True


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: as it is) and restore the count after,
    so a tool called as a function leaves its caller's thread count (and so its float results) alone."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
