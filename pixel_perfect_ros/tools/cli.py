"""Helpers shared by the command-line tools: argument types, ``--threads`` and benchmark timing (no heavy
imports, so a tool's ``--help`` answers at once; the model arguments are in ``model_arguments``)."""
from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable


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

DEFAULT_THREADS = 1
"""Torch CPU threads of the tools that run a model, as the node's ``torch_threads``: on 2 cores, 1 thread
was 1.5x slower than 2 on an idle machine and 1.6-5x faster beside 2 busy processes (docs/offline.md)."""


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = DEFAULT_THREADS,
                         default_text: str | None = None) -> None:
    """``--threads N``: torch's CPU threads (``model_arguments.torch_threads``; 0: torch's default, one per
    core); ``default_text`` says what a None default means."""
    parser.add_argument("--threads", type=non_negative_int, default=default, metavar="N",
                        help="torch CPU threads; 0: torch's default, one per core "
                        f"(default: {default_text or default}; why: docs/offline.md)")


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


def comma_list(item_type: Callable[[str], object], what: str) -> Callable[[str], list]:
    """An argparse type: a comma-separated list of ``item_type`` values, at least one (``what`` names them)."""
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [item_type(item) for item in items]
    return parse


def target_area(text: str) -> int:
    """argparse type: a processing area in pixels, at least one 16x16 patch (``preprocess.processing_size``)."""
    from ..inference.preprocess import PATCH  # torch: when the option is given, not for --help

    return _int_at_least(PATCH * PATCH, f"a processing area of at least {PATCH * PATCH} pixels")(text)


def torch_device_name(text: str) -> str:
    """argparse type: a torch device this machine has (``loader.torch_device``: cpu, cuda, cuda:1, ...)."""
    from ..inference.loader import torch_device  # torch: when the option is parsed, not for --help

    try:
        torch_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


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
