"""Peak memory and time of reading a decompression bomb (a PNG of zeros, 8000x8000 by default) through the
node's frame reading (``processing.read_frame``), with the ``max_input_pixels`` check and without it.

    python -m pixel_perfect_ros.tools.bench_input_bounds [--side 8000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage

from ..ros.conversions import ConversionError
from ..ros.parameters import SPECS
from ..ros.processing import read_frame
from .cli import positive_int


def peak_rss_mb(reset: bool = False) -> float:
    """This process's peak resident set (VmHWM), MB; ``reset`` first sets it to the current one."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def png_bomb(side: int) -> CompressedImage:
    """A side x side PNG of zeros (maximum compression) as a CompressedImage."""
    ok, encoded = cv2.imencode(".png", np.zeros((side, side, 3), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return CompressedImage(format="rgb8; png compressed bgr8", data=encoded.tobytes())


def measure(msg: CompressedImage, max_pixels: int | None) -> tuple[str, float, float]:
    """(outcome, peak memory added in MB, seconds) of reading ``msg`` with the limit ``max_pixels``."""
    before, start = peak_rss_mb(reset=True), time.perf_counter()
    try:
        read_frame(msg, None, max_pixels)
        outcome = "decoded"
    except ConversionError:
        outcome = "refused"
    return outcome, peak_rss_mb() - before, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_input_bounds", description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=positive_int, default=8000, help="the PNG's width and height, pixels")
    args = parser.parse_args(argv)
    bomb = png_bomb(args.side)
    print(f"PNG of {args.side}x{args.side} zeros: {len(bomb.data) / 1e3:.0f} KB")
    limit = SPECS["max_input_pixels"].default
    for name, max_pixels in ((f"max_input_pixels {limit}", limit), ("no limit (before the check)", None)):
        outcome, added_mb, seconds = measure(bomb, max_pixels)
        print(f"{name:32s} {outcome:8s} peak memory +{added_mb:.0f} MB in {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
