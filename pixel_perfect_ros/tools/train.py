"""``ppd-train``: train the tiny bundled model (``training/train.py``), or with ``--video`` the tiny PPVD
(``training/video_train.py``), and write its files and report."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..training.train import (BASELINE_FILE, PPD_FILE, REPORT_FILE, SEMANTICS_FILE, STORAGE_DTYPES,
                              BaselineTrainConfig, PPDTrainConfig, StepLog, check_dataset, load_baseline,
                              round_weights_, save_baseline, save_ppd_checkpoint, save_semantics_checkpoint,
                              train_baseline, train_ppd)
from ..training.resumable import LoopConfig
from ..training.video_semantics import Pi3TrainConfig
from ..training.video_train import (VIDEO_REPORT_FILE, VideoDiTTrainConfig, VideoRun, export_best,
                                    run_video_training)
from .cli import image_size, non_negative_int, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-train",
        description="Train the tiny bundled model: a ViT depth baseline, then a tiny PPD on its frozen "
        "encoder. Writes ppd.pth, moge2.pt (semantics, --semantics-type moge2), baseline.pth, train.json.")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help=".npz with rgb (N,H,W,3) uint8 and depth (N,H,W) float metres, NaN invalid")
    data.add_argument("--synthetic", type=positive_int, metavar="N", help="render N synthetic scenes")
    data.add_argument("--video", type=positive_int, metavar="N",
                      help="train the tiny PPVD (pi3.safetensors + ppvd.pth) on N synthetic clips, seeds 0..N-1")
    parser.add_argument("--size", type=image_size, default=(96, 128), metavar="WxH",
                        help="synthetic image size, multiples of 16 (default: 128x96)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--baseline-steps", type=positive_int, default=BaselineTrainConfig.steps)
    parser.add_argument("--ppd-steps", type=positive_int, default=PPDTrainConfig.steps,
                        help="PPD steps in all, fine-tuning included")
    parser.add_argument("--finetune-steps", type=non_negative_int, default=PPDTrainConfig.finetune_steps,
                        help="last PPD steps that add 0.2 x gradient loss")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(STORAGE_DTYPES), default="fp16",
                        help="storage precision of ppd.pth and moge2.pt; the PPD is trained on the rounded "
                        "encoder (default: fp16)")
    parser.add_argument("--semantics-from", type=Path, metavar="DIR",
                        help="reuse the baseline and semantics encoder of a previous run's folder (PPD only)")
    parser.add_argument("--log-every", type=positive_int, default=50, help="print every this many steps")
    video = parser.add_argument_group("video (--video)")
    video.add_argument("--clip-frames", type=positive_int, default=24, help="frames per synthetic clip")
    video.add_argument("--input-size", type=positive_int, default=VideoDiTTrainConfig.input_size,
                       help="the VideoDiT's square frame side, px (default: 64)")
    video.add_argument("--cache", type=Path, help="clip cache folder (default: OUT/clips)")
    video.add_argument("--pi3-steps", type=positive_int, default=Pi3TrainConfig.steps)
    video.add_argument("--video-steps", type=positive_int, default=VideoDiTTrainConfig.steps,
                       help="VideoDiT steps in all; the last --finetune-steps add the gradient loss")
    video.add_argument("--export-best", action="store_true",
                       help="only write pi3.safetensors and ppvd.pth from OUT's best validated weights so far")
    return parser


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """(rgb, depth, description) from ``--data`` or ``--synthetic``."""
    if args.data is not None:
        with np.load(args.data) as data:
            return data["rgb"], data["depth"].astype(np.float32), str(args.data)
    # Imported here: the renderer is an optional part of the package that only this option needs.
    from ..synthetic import make_dataset
    height, width = args.size
    data = make_dataset(args.synthetic, height, width, args.seed)
    return data["rgb"], data["depth"], f"synthetic N={args.synthetic} {width}x{height} seed={args.seed}"


class _Printer:
    """Prints every ``every``-th step with the mean loss since the last print."""

    def __init__(self, every: int):
        self.every, self.losses, self.last = every, [], {}

    def __call__(self, log: StepLog) -> None:
        if log.stage not in self.last:  # a new stage: do not average across stages
            self.losses = []
        self.losses.append(log.loss)
        self.last[log.stage] = log
        if log.step % self.every == 0:
            mean = sum(self.losses) / len(self.losses)
            parts = " ".join(f"{k}={v:.4f}" for k, v in log.parts.items())
            print(f"[{log.stage}] step {log.step} loss {mean:.4f} ({parts}) {log.elapsed_s:.0f}s", flush=True)
            self.losses = []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.video is not None:
        return video_main(args)
    if args.finetune_steps > args.ppd_steps:
        raise SystemExit(f"--finetune-steps {args.finetune_steps} exceeds --ppd-steps {args.ppd_steps}")
    rgb, depth, source = load_data(args)
    check_dataset(rgb, depth)
    args.out.mkdir(parents=True, exist_ok=True)
    baseline_config = BaselineTrainConfig(steps=args.baseline_steps, batch_size=args.batch_size)
    ppd_config = PPDTrainConfig(steps=args.ppd_steps, finetune_steps=args.finetune_steps, batch_size=args.batch_size)
    printer, start = _Printer(args.log_every), time.perf_counter()
    dtype = STORAGE_DTYPES[args.dtype]

    if args.semantics_from:  # a previous run's baseline and encoder: train the PPD only
        baseline = load_baseline(args.semantics_from / BASELINE_FILE)
        for name in (BASELINE_FILE, SEMANTICS_FILE):
            (args.out / name).write_bytes((args.semantics_from / name).read_bytes())
        semantics = round_weights_(baseline.semantics, dtype)  # as shipped
        baseline_report = {"from": str(args.semantics_from)}
    else:
        baseline = train_baseline(rgb, depth, baseline_config, args.seed, printer)
        save_baseline(baseline, args.out / BASELINE_FILE)
        semantics = round_weights_(baseline.semantics, dtype)
        save_semantics_checkpoint(semantics, baseline_config.model.encoder, args.out / SEMANTICS_FILE, dtype)
        baseline_report = {"config": asdict(baseline_config), "final_step": asdict(printer.last["baseline"])}
    baseline_report["wall_s"] = round(time.perf_counter() - start, 1)
    baseline_s = baseline_report["wall_s"]

    dit = train_ppd(rgb, depth, semantics, ppd_config, args.seed, printer)
    save_ppd_checkpoint(dit, args.out / PPD_FILE, dtype)
    total_s = time.perf_counter() - start
    report = {
        "data": source, "images": int(rgb.shape[0]), "height": int(rgb.shape[1]), "width": int(rgb.shape[2]),
        "seed": args.seed, "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "baseline": baseline_report,
        "ppd": {"config": asdict(ppd_config), "wall_s": round(total_s - baseline_s, 1),
                "final_step": asdict(printer.last["ppd_finetune" if args.finetune_steps else "ppd"])},
        "files": {"ppd": PPD_FILE, "semantics": SEMANTICS_FILE, "semantics_type": "moge2",
                  "baseline": BASELINE_FILE},
        "wall_s": round(total_s, 1),
    }
    (args.out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}/{{{PPD_FILE},{SEMANTICS_FILE},{BASELINE_FILE},{REPORT_FILE}}} in {total_s:.0f}s")
    return 0


def video_main(args: argparse.Namespace) -> int:
    """``--video``: both PPVD stages (resuming from OUT), or ``--export-best``; writes train_video.json."""
    if args.finetune_steps > args.video_steps:
        raise SystemExit(f"--finetune-steps {args.finetune_steps} exceeds --video-steps {args.video_steps}")
    height, width = args.size
    run = VideoRun(out=args.out, cache=args.cache or args.out / "clips", clips=args.video,
                   clip_frames=args.clip_frames, height=height, width=width, seed=args.seed,
                   dtype=STORAGE_DTYPES[args.dtype],
                   pi3=Pi3TrainConfig(steps=args.pi3_steps),
                   dit=VideoDiTTrainConfig(input_size=args.input_size, steps=args.video_steps,
                                           finetune_steps=args.finetune_steps),
                   loop=LoopConfig(log_every=args.log_every, validate_every=5 * args.log_every,
                                   save_every=5 * args.log_every))
    report = export_best(run) if args.export_best else run_video_training(run)
    (args.out / VIDEO_REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
