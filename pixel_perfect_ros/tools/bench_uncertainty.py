"""Does the diffusion samples' spread predict PPD's depth error? Measured on held-out synthetic scenes.

The bundled image model (or the files named) draws N samples per image (``uncertainty_samples``); each
scene (``synthetic.make_dataset``, seed 1: not the training scenes) is scored by
``evaluation/uncertainty.py``: AUSE and Spearman correlation of the spread against the absolute error
beside an image-gradient and a random ranking, and the edge-aware chamfer distance at equal fractions of
removed pixels (by uncertainty, by the flying-pixel filter, by both). The samples of the largest N are
drawn once per scene; the first n of them are the n-sample result (sample i is the run with seed + i).
Cost: ms per frame for each N (median over ``--cost-frames`` frames, this machine) and its ratio to N=1.

    python -m pixel_perfect_ros.tools.bench_uncertainty [--scenes 50] [--samples 2 4 8] [--size 128x96]
        [--figure uncertainty.png] [--json out.json] [--threads 1] [--smoke]
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..evaluation.sequence import write_json_atomic
from ..evaluation.uncertainty import CLEANINGS, RANKINGS, REMOVED_FRACTIONS, score_samples, uncertainty_figure
from ..geometry.alignment import ransac_metric_decoder
from ..geometry.uncertainty import sample_spread
from ..inference.checkpoints import CheckpointError
from ..inference.loader import ModelRequest, load_model
from ..synthetic.dataset import make_dataset
from .bench_video_consistency import machine
from .cli import add_threads_argument, image_size, positive_int
from .model_arguments import torch_threads

HELD_OUT_SEED = 1
"""``make_dataset`` seed of the scenes (the bundled model trained on seed 0's)."""
COST_SAMPLES = (1, 2, 4, 8)
"""The N whose cost per frame is measured."""
SMOKE = dict(scenes=2, samples=[2, 3], cost_frames=1)


def score_scenes(model, data: dict, sample_counts: list[int]) -> tuple[dict[int, list], list[np.ndarray]]:
    """Per N of ``sample_counts``: the ``ImageScores`` of every scene; and the largest N's samples per scene."""
    model.samples = max(sample_counts)
    scores: dict[int, list] = {n: [] for n in sample_counts}
    all_samples = []
    for i, (rgb, gt) in enumerate(zip(data["rgb"], data["depth"])):
        samples = model(rgb).samples  # (N, H, W) normalised log-depth at the image size
        all_samples.append(samples)
        for n in sample_counts:
            scores[n].append(score_samples(samples[:n], rgb, gt, data["K"], seed=i))
        print(f"scene {i + 1}/{len(data['rgb'])}", file=sys.stderr, flush=True)
    return scores, all_samples


def cost_ms(model, images: np.ndarray, frames: int) -> dict[int, float]:
    """Median ms per frame of ``model`` for each N of ``COST_SAMPLES`` over ``frames`` images (after one
    warm-up call per N)."""
    result = {}
    for n in COST_SAMPLES:
        model.samples = n
        model(images[0])
        times = []
        for image in images[:frames]:
            start = time.perf_counter()
            model(image)
            times.append((time.perf_counter() - start) * 1e3)
        result[n] = statistics.median(times)
    return result


def summarise(scores: list) -> dict:
    """Means over scenes of one N's scores (NaN chamfer distances of edge-less scenes left out)."""
    def mean(values) -> float:
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    return {"ause": {r: mean(s.ause[r] for s in scores) for r in RANKINGS},
            "spearman": {r: mean(s.spearman[r] for s in scores) for r in ("spread", "gradient")},
            "abs_error_m": mean(s.abs_error_m for s in scores),
            "chamfer_m": {c: [mean(s.chamfer[c][i] for s in scores) for i in range(len(REMOVED_FRACTIONS))]
                          for c in ("none", *CLEANINGS)},
            "curves": {name: np.mean([s.curves[name] for s in scores], axis=0).tolist()
                       for name in (*RANKINGS, "oracle")}}


def format_tables(summary: dict[int, dict], cost: dict[int, float]) -> str:
    """The markdown tables: ranking quality per N, chamfer distances at the largest N, cost per N."""
    lines = ["| N | AUSE spread | AUSE gradient | AUSE random | Spearman spread | Spearman gradient | mean abs error (m) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, row in summary.items():
        lines.append(f"| {n} | {row['ause']['spread']:.4f} | {row['ause']['gradient']:.4f} | "
                     f"{row['ause']['random']:.4f} | {row['spearman']['spread']:.3f} | "
                     f"{row['spearman']['gradient']:.3f} | {row['abs_error_m']:.4f} |")
    largest = max(summary)
    lines += ["", f"Edge-aware chamfer distance (m), N = {largest}, by fraction of valid pixels removed:", "",
              "| removed by | " + " | ".join(f"{f:.0%}" for f in REMOVED_FRACTIONS) + " |",
              "|---|" + "---:|" * len(REMOVED_FRACTIONS)]
    for cleaning, values in summary[largest]["chamfer_m"].items():
        lines.append(f"| {cleaning} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    lines += ["", "| N | ms / frame | x N=1 |", "|---:|---:|---:|"]
    lines += [f"| {n} | {ms:.1f} | {ms / cost[1]:.2f} |" for n, ms in cost.items()]
    return "\n".join(lines)


def write_figure(path: Path, rgb: np.ndarray, gt: np.ndarray, samples: np.ndarray) -> None:
    """The four-panel figure of one scene: image, aligned depth, spread, |error| (metres)."""
    mask = np.isfinite(gt) & (gt > 0)
    decode = ransac_metric_decoder(samples.mean(axis=0), gt, mask)
    depth = decode(samples.mean(axis=0))
    error = np.where(mask, np.abs(depth - gt), np.nan)
    uncertainty_figure(rgb, depth, sample_spread(decode, samples), error, path,
                       title=f"bundled PPD, {len(samples)} samples: spread vs error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_uncertainty", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help="ppd.pth (default: with --semantics unset, the bundled model)")
    parser.add_argument("--semantics", default="", help="the semantics checkpoint of --checkpoint")
    parser.add_argument("--semantics-type", default="da2", choices=("da2", "moge2"))
    parser.add_argument("--scenes", type=positive_int, default=50, help="held-out scenes (default: 50)")
    parser.add_argument("--samples", type=positive_int, nargs="+", default=[2, 4, 8],
                        help="sample counts N scored (each >= 2; default: 2 4 8)")
    parser.add_argument("--size", type=image_size, default=(96, 128),
                        help="image size WIDTHxHEIGHT (default: 128x96, the bundled model's)")
    parser.add_argument("--steps", type=positive_int, default=4, help="Euler steps (default: 4)")
    parser.add_argument("--cost-frames", type=positive_int, default=10, help="frames timed per N (default: 10)")
    parser.add_argument("--figure", type=Path, help="write the figure of the first scene here (PNG)")
    parser.add_argument("--json", type=Path, help="write the summaries, per-scene values and cost here")
    parser.add_argument("--smoke", action="store_true", help="2 scenes, N = 2 and 3, 1 timed frame")
    add_threads_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if min(args.samples) < 2:
        print("bench_uncertainty: --samples must each be at least 2 (one sample has no spread)", file=sys.stderr)
        return 2
    with torch_threads(args.threads):
        return run(args, "python -m pixel_perfect_ros.tools.bench_uncertainty " + shlex.join(argv))


def run(args: argparse.Namespace, command: str) -> int:
    """The benchmark of the parsed ``args``: prints the tables; returns the exit status."""
    try:
        loaded = load_model(ModelRequest(checkpoint=args.checkpoint, semantics=args.semantics,
                                         semantics_type=args.semantics_type, steps=args.steps, backend="torch"))
    except CheckpointError as error:
        print(f"bench_uncertainty: {error}", file=sys.stderr)
        return 2
    height, width = args.size
    data = make_dataset(args.scenes, height, width, seed=HELD_OUT_SEED)
    scores, samples = score_scenes(loaded.model, data, sorted(args.samples))
    cost = cost_ms(loaded.model, data["rgb"], args.cost_frames)
    summary = {n: summarise(values) for n, values in scores.items()}
    result = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "model": loaded.name, "scenes": args.scenes, "size": [width, height],
              "seed": HELD_OUT_SEED, "steps": args.steps, "summary": summary, "cost_ms": cost,
              "per_scene": {n: [{"ause": s.ause, "spearman": s.spearman, "chamfer_m": s.chamfer,
                                 "abs_error_m": s.abs_error_m} for s in values] for n, values in scores.items()}}
    print(f"`{command}`\n\n{args.scenes} held-out scenes at {width}x{height}, {loaded.name}, {args.steps} steps; "
          f"{machine()}\n\n{format_tables(summary, cost)}")
    if args.json:
        write_json_atomic(args.json, result)
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        write_figure(args.figure, data["rgb"][0], data["depth"][0], samples[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
