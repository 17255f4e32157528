"""Helpers shared by the command-line tools: argument types and benchmark timing (no heavy imports, so a
tool's ``--help`` answers at once; the model arguments are in ``model_arguments``)."""
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
