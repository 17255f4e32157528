"""The GPU check (``scripts/gpu_check.sh`` runs it): the full-size model at 1024x768 x 4 steps on one CUDA GPU,
each backend and dtype in a process of its own, the ``ppd-bench`` table and PASS/FAIL per goal
(``inference/gpu_check.py``).

    python -m pixel_perfect_ros.tools.gpu_check [--dry-run] [--configs torch:fp32,torch:bf16,...]
        [--timeout S] [--budget S] [--tests-timeout S] [--work-dir DIR] [--json PATH]

``--dry-run``: the same structure on the CPU with a tiny random model at 64x64 x 2 steps (what CI checks).
The JSON report goes to ``--json``, by default ``$OUT/gpu_check.json`` when OUT is set.
Child mode (what the check starts per configuration): ``--config BACKEND:DTYPE --work-dir DIR [--dry-run]``.

Exit status: 0 the check ran (a goal may still have failed: see its PASS/FAIL); 1 it broke (no configuration
was measured; a child: its configuration failed); 2 bad arguments, or no CUDA device without --dry-run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from ..inference.gpu_check import (CONFIGS, DRY_RUN_PLAN, GPU_PLAN, Config, config_name, report_lines, run_check,
                                   run_config)
from .cli import comma_list, positive_float

CHILD_MODULE = "pixel_perfect_ros.tools.gpu_check"
"""What a child runs (``python -m``)."""


def config_argument(text: str) -> Config:
    """argparse type: ``BACKEND:DTYPE`` -> (backend, dtype) (the child reports names it does not know)."""
    backend, separator, dtype = text.strip().partition(":")
    if not (separator and backend and dtype):
        raise argparse.ArgumentTypeError(f"expected BACKEND:DTYPE, e.g. torch:bf16, got {text!r}")
    return backend, dtype


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the structure only: a tiny random model on the CPU, 64x64 x 2 steps, 1 run")
    parser.add_argument("--configs", type=comma_list(config_argument, "BACKEND:DTYPE"), default=list(CONFIGS),
                        help=f"configurations (default: {','.join(map(config_name, CONFIGS))})")
    parser.add_argument("--timeout", type=positive_float, default=150.0,
                        help="seconds per configuration (default: 150)")
    parser.add_argument("--budget", type=positive_float, default=270.0,
                        help="seconds for all configurations: later ones are not started (default: 270)")
    parser.add_argument("--tests-timeout", type=positive_float, default=60.0,
                        help="seconds for the CUDA-graph parity tests (default: 60)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the children's results and .npy depths here (default: a temporary folder, "
                             "removed after); a child writes its own there")
    out = os.environ.get("OUT")
    parser.add_argument("--json", type=Path, default=Path(out) / "gpu_check.json" if out else None,
                        help="write the report as JSON here (default: $OUT/gpu_check.json when OUT is set)")
    parser.add_argument("--config", type=config_argument, default=None, help="child mode: measure this configuration")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    plan = DRY_RUN_PLAN if args.dry_run else GPU_PLAN
    if args.config is not None:
        if args.work_dir is None:
            parser.error("--config needs --work-dir")
        return run_config(args.config, plan, args.work_dir)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here (torch.cuda.is_available() is False): use --dry-run for the CPU")
    child = [sys.executable, "-m", CHILD_MODULE] + (["--dry-run"] if args.dry_run else [])
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as temporary:
        work_dir = args.work_dir or Path(temporary)
        work_dir.mkdir(parents=True, exist_ok=True)
        report = run_check(plan, args.configs, child, work_dir, timeout_s=args.timeout, budget_s=args.budget,
                           tests_timeout_s=args.tests_timeout, log=lambda line: print(line, flush=True))
    print("\n".join(report_lines(report)))
    if args.work_dir is not None:
        print(f"results and .npy depths kept in {args.work_dir}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json())
        print(f"report: {args.json}")
    return 1 if report.broke else 0


if __name__ == "__main__":
    raise SystemExit(main())
