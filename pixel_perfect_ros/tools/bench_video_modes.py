"""Benchmark of the PPVD video modes on one clip: ``window`` against ``stream_exact`` and ``stream_cached``.

Runs the official windowed pipeline (``PixelPerfectVideoDepth``) and ``StreamingVideoDepth`` in both
streaming modes for several K (``frames_per_window``) on one deterministic clip (a seeded random image
seen by a camera that pans and zooms a little every frame) and prints a markdown table per mode and K:

- DiT frame-passes per output frame: frames run through the DiT per Euler step, divided by the frames
  output (counted at the DiT's patch embedding; an exact cost measure independent of the machine);
- ms per output frame in the steady state (window: the whole clip; streams: the pushes, and the final
  flush, made with the reference cache ready, re-anchoring ones excepted);
- latency: the most frames any frame waits before its depth comes out;
- agreement with ``window``: mean |a d + b - d_window| over the frames both output (normalised log-depth,
  a and b least squares over the clip, ``scale_and_shift``);
- flicker: mean |d_t - d_(t-1)| over consecutive output frames;
- for ``stream_cached``, its approximation: mean |d_cached - d_exact| against ``stream_exact`` at the same K.

Ratios are against ``window`` in the same run. With random weights (the default, and ``--architecture
official`` without checkpoints) agreement and flicker are not quality measures; only the cost columns
carry over to real weights.

    python -m pixel_perfect_ros.tools.bench_video_modes [--frames 55] [--size 96x64] [--steps 4]
        [--k 1 4 13] [--keyframe-every 8] [--repeats 1] [--threads N] [--architecture tiny|official | --full-size]
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..inference.video_pipeline import PixelPerfectVideoDepth
from ..inference.video_stream import MODES, StreamingVideoDepth
from ..inference.video_windows import OVERLAP, STRIDE, scale_and_shift, window_slots
from ..model.dit_video import VideoDiT
from ..model.pi3 import PI3_ARCHITECTURE, Pi3Semantics
from ..model.random_weights import randomize_, tiny_video_models
from .cli import add_threads_argument, image_size, positive_int
from .model_arguments import torch_threads

WINDOW_MODE = "window"
"""The official windowed pipeline, the baseline of the ratios."""
PAN_PX, ZOOM = 1.5, 0.004
"""Camera motion per frame: pan in source pixels, relative zoom."""


# ------------------------------------------------------------------------------------------------
# Models and clip
# ------------------------------------------------------------------------------------------------

def official_models() -> tuple[VideoDiT, Pi3Semantics]:
    """VideoDiT() and Pi3 at the released architecture, random weights (slow on a CPU)."""
    return randomize_(VideoDiT(), seed=4), randomize_(Pi3Semantics.from_architecture(**PI3_ARCHITECTURE), seed=5)


ARCHITECTURES = {"tiny": tiny_video_models, "official": official_models}
"""Model builders by name (``--architecture``)."""


def synthetic_clip(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(L, H, W, 3) uint8: a smooth seeded random image under a slow pan and zoom."""
    rng = np.random.default_rng(seed)
    source = cv2.resize(rng.uniform(0, 255, (12, 16, 3)).astype(np.float32), (4 * width, 4 * height),
                        interpolation=cv2.INTER_CUBIC)  # (4H, 4W, 3) smooth blobs
    source += rng.normal(0, 8, source.shape).astype(np.float32)  # fine texture
    frames = []
    for t in range(num_frames):
        step = 2.0 / (1 + ZOOM * t)  # source pixels per output pixel, shrinking as the camera zooms in
        src_from_dst = np.array([[step, 0, width + PAN_PX * t], [0, step, height + 0.5 * PAN_PX * t]])
        frames.append(cv2.warpAffine(source, src_from_dst, (width, height),
                                     flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModeRun:
    """One mode's run on the clip.

    Attributes:
        mode: "window", "stream_exact" or "stream_cached".
        frames_per_window: K (13 new frames per window for ``window``).
        depth: (M, H, W) float32 normalised log-depth of the first M clip frames (the ones output).
        dit_passes_per_frame: frames through the DiT per Euler step per output frame, steady state.
        ms_per_frame: wall time per output frame, steady state.
        latency_frames: the most frames any frame waited for its depth.
        dit_passes_per_frame_all, ms_per_frame_all: the same over the whole clip (a stream's filling and
            re-anchoring included).
        reanchors: how many times a stream re-anchored (0 for ``window``).
    """

    mode: str
    frames_per_window: int
    depth: np.ndarray
    dit_passes_per_frame: float
    ms_per_frame: float
    latency_frames: int
    dit_passes_per_frame_all: float
    ms_per_frame_all: float
    reanchors: int = 0


class DiTFrameCounter:
    """Counts the frames entering a DiT, video or image (its patch embedding ``x_embedder`` runs once per call in
    every forward variant); ``handle.remove()`` stops counting."""

    def __init__(self, dit: torch.nn.Module):
        self.frames = 0
        self.handle = dit.x_embedder.register_forward_hook(self._count)

    def _count(self, module, args, output) -> None:
        self.frames += len(args[0])


def run_window(model: PixelPerfectVideoDepth, clip: np.ndarray) -> ModeRun:
    """The official windowed pipeline on the whole clip (a frame waits for the last frame of its window)."""
    counter = DiTFrameCounter(model.dit)
    try:
        start = time.perf_counter()
        depth = model(clip).depth
        elapsed_ms = (time.perf_counter() - start) * 1e3
    finally:
        counter.handle.remove()
    # a window runs once its last frame has arrived; its new frames (all 16 in window 0) wait for it
    latency = max(max(slots) - frame for k, slots in enumerate(window_slots(len(clip)))
                  for frame in (slots if k == 0 else slots[OVERLAP:]))
    passes, ms = counter.frames / len(model.timesteps) / len(clip), elapsed_ms / len(clip)
    return ModeRun(WINDOW_MODE, STRIDE, depth, passes, ms, latency, passes, ms)


def run_stream(model: PixelPerfectVideoDepth, clip: np.ndarray, mode: str, frames_per_window: int,
               keyframe_every: int, max_scale_jump: float = math.inf) -> ModeRun:
    """``StreamingVideoDepth`` frame by frame, then ``flush`` (every frame gets its depth); steady state = the
    calls made with the reference cache ready that did not re-anchor (a re-anchoring refills the cache: it
    counts in the whole-clip figures).

    ``max_scale_jump`` defaults to infinite: with random weights the fits are meaningless and re-anchoring
    would only add noise to the cost figures.
    """
    stream = StreamingVideoDepth(model, frames_per_window, keyframe_every, max_scale_jump=max_scale_jump, mode=mode)
    counter = DiTFrameCounter(model.dit)
    calls = [(i, lambda frame=frame, i=i: stream.push(frame, i)) for i, frame in enumerate(clip)]
    calls.append((len(clip) - 1, stream.flush))  # (frame index when called, call)
    depths, latency, total_ms, steady_ms, steady_frames, steady_out = [], 0, 0.0, 0.0, 0, 0
    try:
        for now, call in calls:
            ready, reanchors = stream.cache.state == "ready", stream.reanchors
            counted = counter.frames
            start = time.perf_counter()
            published = call()
            elapsed_ms = (time.perf_counter() - start) * 1e3
            total_ms += elapsed_ms
            if ready and stream.reanchors == reanchors:
                steady_ms += elapsed_ms
                steady_frames += counter.frames - counted
                steady_out += len(published)
            for stamp, depth in published:
                latency = max(latency, now - stamp)
                depths.append(depth)
    finally:
        counter.handle.remove()
    steady_out = max(steady_out, 1)
    steps = len(model.timesteps)
    return ModeRun(mode, frames_per_window, np.stack(depths), steady_frames / steps / steady_out,
                   steady_ms / steady_out, latency, counter.frames / steps / len(depths), total_ms / len(depths),
                   stream.reanchors)


def agreement(depth: np.ndarray, reference: np.ndarray) -> float:
    """mean |a depth + b - reference| over the frames both hold, (a, b) least squares over them."""
    m = min(len(depth), len(reference))
    scale, shift = scale_and_shift(depth[:m], reference[:m])
    return float(np.abs(depth[:m] * scale + shift - reference[:m]).mean())


def flicker(depth: np.ndarray) -> float:
    """mean |d_t - d_(t-1)| over consecutive frames (0 for a single frame)."""
    return float(np.abs(np.diff(depth, axis=0)).mean()) if len(depth) > 1 else 0.0


def run_all(model: PixelPerfectVideoDepth, clip: np.ndarray, ks: list[int], keyframe_every: int,
            repeats: int = 1) -> list[ModeRun]:
    """``window``, then each streaming mode for each K, after one untimed warm-up window.

    With ``repeats`` > 1 every run is repeated and the fastest ``ms_per_frame`` kept (the other fields are
    deterministic).
    """
    model(clip[:1])  # warm-up: lazy allocations and kernels
    runs = []
    for _ in range(repeats):
        again = [run_window(model, clip)] + [run_stream(model, clip, mode, k, keyframe_every)
                                             for mode in MODES for k in ks]
        runs = again if not runs else [min(a, b, key=lambda run: run.ms_per_frame) for a, b in zip(runs, again)]
    return runs


def format_table(runs: list[ModeRun]) -> str:
    """The markdown table; ratios against the first run (``window``)."""
    base = runs[0]
    base_flicker = flicker(base.depth)
    exact = {run.frames_per_window: run.depth for run in runs if run.mode == "stream_exact"}
    lines = ["| mode | K | frames out | DiT frame-passes / frame | x window | ms / frame | x window "
             "| latency (frames) | agreement vs window | flicker | x window | vs stream_exact |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        fl = flicker(run.depth)
        vs_exact = "-"
        if run.mode == "stream_cached" and run.frames_per_window in exact:
            vs_exact = f"{np.abs(run.depth - exact[run.frames_per_window]).mean():.5f}"
        lines.append(
            f"| {run.mode} | {run.frames_per_window} | {len(run.depth)} | {run.dit_passes_per_frame:.3f} "
            f"| {run.dit_passes_per_frame / base.dit_passes_per_frame:.2f} | {run.ms_per_frame:.1f} "
            f"| {run.ms_per_frame / base.ms_per_frame:.2f} | {run.latency_frames} "
            f"| {agreement(run.depth, base.depth):.5f} | {fl:.5f} "
            f"| {fl / base_flicker if base_flicker else float('nan'):.2f} | {vs_exact} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def k_value(text: str) -> int:
    """argparse type: K in [1, 13]."""
    value = positive_int(text)
    if value > STRIDE:
        raise argparse.ArgumentTypeError(f"K must be in [1, {STRIDE}], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_video_modes", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=positive_int, default=55,
                        help="clip length (default: 55 = 3 filling frames + 52, a multiple of 1, 4 and 13)")
    parser.add_argument("--size", type=image_size, default=(64, 96),
                        help="clip frame size WIDTHxHEIGHT (default: 96x64)")
    parser.add_argument("--steps", type=positive_int, default=4, help="Euler steps (default: 4, official)")
    parser.add_argument("--k", type=k_value, nargs="+", default=[1, 4, 13],
                        help="frames_per_window values of the streaming modes (default: 1 4 13)")
    parser.add_argument("--keyframe-every", type=positive_int, default=8, help="keyframe period (default: 8)")
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="runs per mode; the fastest ms per frame is kept (default: 1)")
    add_threads_argument(parser, default=0)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="tiny",
                        help="random-weight model size (default: tiny; official is slow on a CPU)")
    parser.add_argument("--full-size", dest="architecture", action="store_const", const="official",
                        help="same as --architecture official")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (exits with status 2 on bad values, like argparse)."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The benchmark of the parsed ``args``: prints the tables; returns the exit status."""
    height, width = args.size
    model = PixelPerfectVideoDepth(*ARCHITECTURES[args.architecture](), steps=args.steps, seed=0, device=args.device)
    clip = synthetic_clip(args.frames, height, width)
    runs = run_all(model, clip, args.k, args.keyframe_every, args.repeats)
    print(f"{args.frames} frames {width}x{height}, network {model.dit.input_size}x{model.dit.input_size}, "
          f"architecture {args.architecture}, {args.steps} steps, keyframe every {args.keyframe_every}, "
          f"{torch.get_num_threads()} threads, device {model.device}")
    print("RANDOM WEIGHTS: 'agreement vs window' and 'flicker' are NOT quality measures; "
          "the DiT frame-passes, ms and latency columns are the cost figures. "
          "ms: steady state, fastest of the repeats; latency: most frames a frame waits for its depth.")
    print(format_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
