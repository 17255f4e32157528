"""Temporal consistency of the PPVD video modes against per-frame PPD, on held-out synthetic clips.

Rows: per-frame PPD (the bundled image model), ``window`` (the official windowed PPVD) and the streaming
modes ``stream_exact`` and ``stream_cached`` for each K (``frames_per_window``). Clips: ``synthetic.make_clip``
with seeds from 1000 up (training uses 0..999), every other clip cut once in the middle (a new room).
Scores (``evaluation/temporal.py``), means over clips: AbsRel and delta1 after one RANSAC fit in
``log(1 + d)`` per clip, TAE and flicker of that clip-aligned depth, and the frames after a cut until the
per-frame AbsRel relative to per-frame PPD's is back within 10 % of its level before the cut; cost: DiT
frame-passes per frame (frames through the DiT per Euler step per output frame: over the whole clip, and
steady = a stream's calls with its reference cache ready that did not re-anchor) and ms per frame (whole
clip, this machine). Prints a markdown table and whether the consistency targets hold; ``--json`` keeps the
per-clip values.

    python -m pixel_perfect_ros.tools.bench_video_consistency [--checkpoint ppvd.pth --semantics pi3.safetensors]
        [--clips 20] [--frames 48] [--size 128x96] [--k 1 4] [--cache DIR] [--json PATH] [--smoke] [--threads N]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..evaluation.sequence import write_json_atomic
from ..evaluation.temporal import ClipScores, recovery_frames, score_clip
from ..inference.checkpoints import CheckpointError
from ..inference.loader import ModelRequest, load_model
from ..inference.pipeline import PixelPerfectDepth
from ..inference.video_pipeline import PixelPerfectVideoDepth
from ..inference.video_stream import MODES
from ..synthetic.clips import Clip, make_clip
from .bench_video_modes import DiTFrameCounter, ModeRun, k_value, run_stream, run_window
from .cli import add_threads_argument, image_size, positive_float, positive_int
from .model_arguments import torch_threads

FIRST_SEED = 1000
"""Seed of the first held-out clip (the synthetic training clips use seeds 0..999)."""
PER_FRAME = "ppd (per frame)"
"""The image model's row, the reference of the TAE ratios and of the recovery."""
SMOKE = dict(clips=2, frames=16, size=(48, 64))
"""What ``--smoke`` sets: 2 clips of 16 frames at 64x48."""
TAE_VS_PER_FRAME, TAE_VS_WINDOW, MAX_DIT_PASSES = 0.6, 1.2, 1.5
"""The consistency targets: every video mode's TAE <= 0.6x per-frame PPD's; ``stream_cached`` K = 1 within 1.2x
of ``window``'s TAE at <= 1.5 DiT frame-passes per frame (steady state)."""


# ------------------------------------------------------------------------------------------------
# Clips
# ------------------------------------------------------------------------------------------------

def clip_cuts(index: int, frames: int) -> tuple[int, ...]:
    """Every other clip (odd ``index``) has one cut in the middle; clips of one frame have none."""
    return (frames // 2,) if index % 2 and frames > 1 else ()


def load_clip(seed: int, frames: int, height: int, width: int, cuts: tuple[int, ...], cache: Path | None) -> Clip:
    """``make_clip`` (deterministic), read from / written to ``cache`` as an npz when given."""
    name = f"clip_{seed}_{frames}f_{width}x{height}_cuts{'-'.join(map(str, cuts))}.npz"
    path = None if cache is None else cache / name
    if path is not None and path.is_file():
        with np.load(path) as data:
            return Clip(data["rgb"], data["depth"], data["K"], data["T_world_from_cam"],
                        tuple(int(c) for c in data["cuts"]))
    clip = make_clip(seed, frames, height, width, cuts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            np.savez_compressed(file, rgb=clip.rgb, depth=clip.depth, K=clip.K,
                                T_world_from_cam=clip.T_world_from_cam, cuts=np.array(cuts, dtype=np.int64))
        os.replace(temporary, path)
    return clip


def held_out_clips(count: int, frames: int, height: int, width: int, cache: Path | None) -> Iterator[tuple[int, Clip]]:
    """(seed, clip) of ``count`` clips from ``FIRST_SEED`` up, the i-th cut as ``clip_cuts(i)``; a seed whose
    room has no free camera path (``make_clip``'s RuntimeError) is skipped."""
    seed, made = FIRST_SEED, 0
    while made < count:
        try:
            clip = load_clip(seed, frames, height, width, clip_cuts(made, frames), cache)
        except RuntimeError:
            seed += 1
            continue
        yield seed, clip
        made, seed = made + 1, seed + 1


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------

def run_per_frame(model: PixelPerfectDepth, frames: np.ndarray) -> ModeRun:
    """The image model on every frame of (L, H, W, 3) uint8 ``frames`` on its own (torch backend: the DiT's
    frames are counted at its patch embedding)."""
    counter = DiTFrameCounter(model.dit)
    try:
        start = time.perf_counter()
        depth = np.stack([model(frame).depth for frame in frames])  # (L, H, W)
        ms = (time.perf_counter() - start) * 1e3 / len(frames)
    finally:
        counter.handle.remove()
    passes = counter.frames / len(model.timesteps) / len(frames)
    return ModeRun(PER_FRAME, 1, depth, passes, ms, 0, passes, ms)


def run_clip(image_model: PixelPerfectDepth, video_model: PixelPerfectVideoDepth, frames: np.ndarray,
             ks: list[int], keyframe_every: int, max_scale_jump: float) -> list[ModeRun]:
    """Every row on one clip: per-frame PPD, ``window``, then each streaming mode for each K."""
    return [run_per_frame(image_model, frames), run_window(video_model, frames)] + [
        run_stream(video_model, frames, mode, k, keyframe_every, max_scale_jump) for mode in MODES for k in ks]


@dataclass
class Row:
    """One mode's runs and scores over the clips, in clip order (``recovery``: frames per cut, per clip)."""

    mode: str
    k: int
    runs: list[ModeRun] = field(default_factory=list)
    scores: list[ClipScores] = field(default_factory=list)
    recovery: list[list[int]] = field(default_factory=list)


def add_clip(rows: list[Row], clip: Clip, runs: list[ModeRun]) -> None:
    """Score one clip's runs (in ``rows``' order, the per-frame row first) into ``rows``."""
    scores = [score_clip(run.depth, clip.depth, clip.T_world_from_cam, clip.K, clip.cuts) for run in runs]
    for row, run, score in zip(rows, runs, scores):
        row.runs.append(run)
        row.scores.append(score)
        row.recovery.append([] if row.mode == PER_FRAME else recovery_frames(score, scores[0], clip.cuts))


# ------------------------------------------------------------------------------------------------
# Summary, table, targets
# ------------------------------------------------------------------------------------------------

def _mean(values: list[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def summarise(row: Row, seeds: list[int], cuts: list[tuple[int, ...]]) -> dict:
    """The row's means over clips (recovery: over all cuts; None for the per-frame row or without cuts), its
    median TAE (robust to a clip whose alignment fails) and its per-clip values."""
    clips = [{"seed": seed, "cuts": list(clip_cut), "abs_rel": s.abs_rel, "delta_1": s.delta_1, "tae": s.tae,
              "flicker": s.flicker, "recovery_frames": recovery, "frame_abs_rel": s.frame_abs_rel.tolist(),
              "dit_passes_per_frame": run.dit_passes_per_frame_all,
              "dit_passes_per_frame_steady": run.dit_passes_per_frame, "ms_per_frame": run.ms_per_frame_all,
              "reanchors": run.reanchors}
             for seed, clip_cut, s, run, recovery in zip(seeds, cuts, row.scores, row.runs, row.recovery)]
    counts = [frames for recovery in row.recovery for frames in recovery]
    means = {key: _mean([clip[key] for clip in clips]) for key in
             ("abs_rel", "delta_1", "tae", "flicker", "dit_passes_per_frame", "dit_passes_per_frame_steady",
              "ms_per_frame")}
    taes = [clip["tae"] for clip in clips if math.isfinite(clip["tae"])]
    return {"mode": row.mode, "k": row.k, **means, "tae_median": statistics.median(taes) if taes else math.nan,
            "recovery_frames": _mean(counts) if counts else None,
            "reanchors": sum(clip["reanchors"] for clip in clips), "clips": clips}


def format_table(rows: list[dict]) -> str:
    """The markdown table of the summarised rows; TAE ratios against the first (per-frame) row."""
    base = rows[0]
    lines = ["| mode | K | AbsRel | delta1 | TAE | x per-frame | TAE median | x per-frame | flicker "
             "| recovery after cut (frames) | DiT frame-passes / frame | steady | ms / frame | re-anchors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        recovery = "-" if row["recovery_frames"] is None else f"{row['recovery_frames']:.1f}"
        k = "-" if row["mode"] == PER_FRAME else row["k"]
        lines.append(f"| {row['mode']} | {k} | {row['abs_rel']:.4f} | {row['delta_1']:.3f} | {row['tae']:.4f} "
                     f"| {row['tae'] / base['tae']:.2f} | {row['tae_median']:.4f} "
                     f"| {row['tae_median'] / base['tae_median']:.2f} | {row['flicker']:.4f} | {recovery} "
                     f"| {row['dit_passes_per_frame']:.2f} | {row['dit_passes_per_frame_steady']:.2f} "
                     f"| {row['ms_per_frame']:.1f} | {row['reanchors']} |")
    return "\n".join(lines)


def targets(rows: list[dict], key: str = "tae") -> dict:
    """Whether the consistency targets hold (``TAE_VS_PER_FRAME``, ``TAE_VS_WINDOW``, ``MAX_DIT_PASSES``) on the
    rows' ``key`` ("tae": means over clips, "tae_median": medians), with the figures; ``stream_cached_k1`` is
    None when no ``stream_cached`` K = 1 row ran."""
    base, window = rows[0], next(row for row in rows if row["mode"] == "window")
    ratios = {f"{row['mode']} K={row['k']}": row[key] / base[key] for row in rows[1:]}
    out = {"statistic": key, "video_tae_vs_per_frame": {
        "ratios": ratios, "limit": TAE_VS_PER_FRAME, "holds": all(r <= TAE_VS_PER_FRAME for r in ratios.values())}}
    cached = next((row for row in rows if row["mode"] == "stream_cached" and row["k"] == 1), None)
    out["stream_cached_k1"] = None if cached is None else {
        "tae_vs_window": cached[key] / window[key], "tae_limit": TAE_VS_WINDOW,
        "dit_passes_per_frame_steady": cached["dit_passes_per_frame_steady"],
        "dit_passes_per_frame": cached["dit_passes_per_frame"], "passes_limit": MAX_DIT_PASSES,
        "holds": cached[key] <= TAE_VS_WINDOW * window[key]
        and cached["dit_passes_per_frame_steady"] <= MAX_DIT_PASSES}
    return out


def target_lines(result: dict) -> list[str]:
    """One ``targets`` result as lines for the console."""
    statistic = "means" if result["statistic"] == "tae" else "medians"
    tae = result["video_tae_vs_per_frame"]
    ratios = ", ".join(f"{name} {ratio:.2f}" for name, ratio in tae["ratios"].items())
    lines = [f"target on TAE {statistic}: every video mode's TAE <= {tae['limit']}x per-frame PPD's: "
             f"{'HOLDS' if tae['holds'] else 'FAILS'} ({ratios})"]
    cached = result["stream_cached_k1"]
    if cached is None:
        lines.append(f"target on TAE {statistic}: stream_cached K=1 vs window: not measured (no K=1 in --k)")
    else:
        lines.append(f"target on TAE {statistic}: stream_cached K=1 TAE <= {cached['tae_limit']}x window's at <= "
                     f"{cached['passes_limit']} DiT frame-passes / frame (steady): "
                     f"{'HOLDS' if cached['holds'] else 'FAILS'} ({cached['tae_vs_window']:.2f}x, "
                     f"{cached['dit_passes_per_frame_steady']:.2f} steady, {cached['dit_passes_per_frame']:.2f} "
                     "over whole clips with filling and re-anchoring)")
    return lines


def setting_line(result: dict) -> str:
    """The table's caption: date, machine, models and settings of a run's ``result``."""
    settings = result["settings"]
    seeds = settings["seeds"]
    skipped = sorted(set(range(seeds[0], seeds[-1] + 1)) - set(seeds))
    return (f"{result['date']}; {result['machine']}; device {result['device']}, {result['threads']} thread(s); "
            f"image model {result['image_model']}, video model {result['video_model']}; {len(seeds)} clips x "
            f"{settings['frames']} frames {settings['size'][0]}x{settings['size'][1]} (seeds {seeds[0]}..{seeds[-1]}, "
            f"skipped for want of a camera path: {skipped or 'none'}; every other clip cut in the middle), "
            f"{settings['steps']} steps, K {settings['k']}, keyframe every {settings['keyframe_every']}, "
            f"max scale jump {settings['max_scale_jump']}")


def machine() -> str:
    """One line: cores, architecture, memory, torch, device."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{os.cpu_count()}-core {platform.machine()}, {memory:.0f} GiB, torch {torch.__version__}"


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_video_consistency", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="",
                        help="PPVD ppvd.pth (default: with no --semantics either, the bundled tiny video model)")
    parser.add_argument("--semantics", default="", help="Pi3 model.safetensors (default: as --checkpoint)")
    parser.add_argument("--clips", type=positive_int, default=20, help="held-out clips (default: 20)")
    parser.add_argument("--frames", type=positive_int, default=48, help="frames per clip (default: 48)")
    parser.add_argument("--size", type=image_size, default=(96, 128),
                        help="frame size WIDTHxHEIGHT (default: 128x96, the bundled models')")
    parser.add_argument("--k", type=k_value, nargs="+", default=[1, 4],
                        help="frames_per_window of the streaming modes (default: 1 4)")
    parser.add_argument("--keyframe-every", type=positive_int, default=8, help="keyframe period (default: 8)")
    parser.add_argument("--max-scale-jump", type=positive_float, default=0.5,
                        help="re-anchoring threshold of the streams (default: 0.5, the node's)")
    parser.add_argument("--steps", type=positive_int, default=4, help="Euler steps of both models (default: 4)")
    parser.add_argument("--cache", type=Path, help="folder of the rendered clips (npz), reused by later runs")
    parser.add_argument("--json", type=Path, help="write the rows, per-clip values and targets here")
    parser.add_argument("--smoke", action="store_true", help="2 clips of 16 frames at 64x48 (a fast check)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_threads_argument(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (``--smoke`` overrides clips, frames and size)."""
    args = build_parser().parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run(args, "python -m pixel_perfect_ros.tools.bench_video_consistency " + shlex.join(argv))


def run(args: argparse.Namespace, command: str) -> int:
    """The benchmark of the parsed ``args``: prints the table and the targets; returns the exit status."""
    try:
        video = load_model(ModelRequest(checkpoint=args.checkpoint, semantics=args.semantics, video=True,
                                        steps=args.steps, device=args.device))
    except CheckpointError as error:
        print(f"bench_video_consistency: {error}", file=sys.stderr)
        return 2
    image = load_model(ModelRequest(steps=args.steps, device=args.device, backend="torch"))
    height, width = args.size
    seeds, cuts = [], []
    rows = [Row(PER_FRAME, 1), Row("window", 13)] + [Row(mode, k) for mode in MODES for k in args.k]
    for i, (seed, clip) in enumerate(held_out_clips(args.clips, args.frames, height, width, args.cache)):
        seeds.append(seed)
        cuts.append(clip.cuts)
        if i == 0:  # warm-up: lazy allocations and kernels
            image.model(clip.rgb[0])
            video.model(clip.rgb[:1])
        start = time.perf_counter()
        add_clip(rows, clip, run_clip(image.model, video.model, clip.rgb, args.k, args.keyframe_every,
                                      args.max_scale_jump))
        print(f"clip {i + 1}/{args.clips} (seed {seed}, cuts {list(clip.cuts)}): {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    summary = [summarise(row, seeds, cuts) for row in rows]
    result = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "device": args.device, "threads": torch.get_num_threads(),
              "image_model": image.name, "video_model": video.name,
              "settings": {"clips": args.clips, "frames": args.frames, "size": [width, height], "seeds": seeds,
                           "k": args.k, "keyframe_every": args.keyframe_every, "max_scale_jump": args.max_scale_jump,
                           "steps": args.steps, "alignment": "one RANSAC fit in log(1 + d) per clip (ransac_log)"},
              "rows": summary, "targets": {"means": targets(summary), "medians": targets(summary, "tae_median")}}
    print(f"`{command}`\n\n{setting_line(result)}\n\n{format_table(summary)}\n")
    print("\n".join(target_lines(result["targets"]["means"]) + target_lines(result["targets"]["medians"])))
    if args.json:
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
