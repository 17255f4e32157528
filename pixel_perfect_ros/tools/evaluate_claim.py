"""The paper's claim at small scale: tiny PPD vs a regression baseline vs lossy ground truth.

The command line of ``training/evaluate.py``: renders a held-out synthetic test set (its own seed) and
prints AbsRel, delta1 and the edge-aware chamfer distance (metres) of each source.

    python -m pixel_perfect_ros.tools.evaluate_claim --checkpoints DIR [--synthetic 100] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..synthetic import make_dataset
from ..training.evaluate import evaluate, load_models
from .cli import image_size, positive_int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ppd-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder with ppd.pth, moge2.pt, baseline.pth")
    parser.add_argument("--synthetic", type=positive_int, default=100, help="test scenes (default: 100)")
    parser.add_argument("--size", type=image_size, default=(96, 128), metavar="WxH", help="default: 128x96")
    parser.add_argument("--seed", type=int, default=1, help="test-set seed; training used another (default: 1)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)
    height, width = args.size
    data = make_dataset(args.synthetic, height, width, seed=args.seed)
    table = evaluate(load_models(args.checkpoints, height * width), data["rgb"], data["depth"], data["K"])
    print(f"{args.synthetic} synthetic test scenes, {width}x{height}, seed {args.seed}")
    print(f"{'source':<10} {'AbsRel':>8} {'delta1':>8} {'chamfer_m':>10}")
    for source, row in table.items():
        print(f"{source:<10} {row['abs_rel']:8.4f} {row['delta_1']:8.4f} {row['chamfer_m']:10.4f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
