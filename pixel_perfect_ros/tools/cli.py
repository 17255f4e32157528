"""Helpers shared by the command-line tools: argument types and benchmark timing."""
from __future__ import annotations

import argparse
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


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run, milliseconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
