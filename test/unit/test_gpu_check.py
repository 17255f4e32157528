"""scripts/gpu_check.sh --dry-run (the GPU check's structure on the CPU, a tiny random model) and the
isolation of its configurations: a crashing or failing child is reported and the others still run. The
goals' verdicts are not asserted (the dry run's times say nothing about them)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixel_perfect_ros.inference.benchmark import Row
from pixel_perfect_ros.inference.gpu_check import (CONFIGS, CRASH_ENV, DEVIATION_REFERENCE, DRY_RUN_PLAN, GPU_PLAN,
                                                   SPEED_REFERENCE, config_name, judge_goals, run_process)
from pixel_perfect_ros.tools import gpu_check

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
GOAL_COUNT = 2 + len(CONFIGS) - 1  # latency, speed-up, the p99 deviation of each configuration but the reference


def dry_run(out: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """``bash scripts/gpu_check.sh --dry-run ARGS`` from another folder with OUT=out: (process, report)."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), **(env or {})}
    completed = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], cwd=out, capture_output=True, text=True,
                               timeout=180, env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed, json.loads((out / "gpu_check.json").read_text())


def rows_by_config(report: dict) -> dict[str, dict]:
    return {f"{row['backend']}:{row['dtype']}": row for row in report["rows"]}


@pytest.fixture(scope="module")
def full_dry_run(tmp_path_factory):
    return dry_run(tmp_path_factory.mktemp("out"))


def test_every_configuration_has_a_row_or_a_reason(full_dry_run):
    completed, report = full_dry_run
    rows = rows_by_config(report)
    assert list(rows) == [config_name(config) for config in CONFIGS]
    assert report["dry_run"] is True and report["broke"] is False and report["errors"] == {}
    assert report["plan"]["device"] == "cpu" and report["device"].startswith("cpu")
    assert report["torch"] and report["date"]
    for name, row in rows.items():
        if row["status"] != "ok":
            assert row["status"].startswith("not run: ") and len(row["status"]) > len("not run: "), name
            continue
        times = [row["total_ms"], row["first_call_ms"], row["model_ms"], *row["stage_ms"].values()]
        assert all(math.isfinite(t) and t > 0 for t in times), (name, row)
        assert set(row["stage_ms"]) == {"preprocess", "semantics", "sampling", "depth_decode"}
        assert 0 <= row["p99_diff"] <= row["max_diff"] and row["speedup"] > 0 and row["peak_fraction"] > 0
    reference, speed_reference = rows[config_name(DEVIATION_REFERENCE)], rows[config_name(SPEED_REFERENCE)]
    assert reference["status"] == "ok" and reference["max_diff"] == reference["p99_diff"] == 0
    assert speed_reference["status"] == "ok" and speed_reference["speedup"] == 1
    assert rows["torch_cuda_graph:bf16"]["status"].startswith("not run: needs a CUDA device")
    assert rows["onnxruntime:fp16"]["status"].startswith("not run: ")  # no CUDA provider (or no onnxruntime)
    assert report["parity_tests"]["status"].startswith("not run: dry run")
    assert set(report["child_seconds"]) == set(rows)


def test_the_goals_are_judged_and_printed(full_dry_run):
    completed, report = full_dry_run
    goals = report["goals"]
    assert len(goals) == GOAL_COUNT and all(goal["passed"] in (True, False, None) for goal in goals)
    assert goals[0]["target"] == "< 100 ms" and goals[1]["target"] == "> 2x" and goals[0]["config"] is not None
    assert goals[2]["config"] == "torch:bf16" and goals[2]["passed"] is not None  # both torch rows ran
    assert goals[-1]["config"] == "onnxruntime:fp16" and goals[-1]["passed"] is None
    out = completed.stdout
    assert "| backend | dtype | steps | preprocess |" in out and "### 64x64 (W x H)" in out and "DRY RUN" in out
    assert "deviation reference" in out and "speed-up reference" in out
    assert sum(line.lstrip().startswith(("PASS", "FAIL", "n/a")) for line in out.splitlines()) == GOAL_COUNT
    assert "parity tests (" in out and out.rstrip().splitlines()[-1].endswith("gpu_check.json")


def test_a_crash_and_a_failure_are_reported_and_the_others_run(tmp_path):
    completed, report = dry_run(tmp_path, "--configs", "bogus:fp32,torch:bf16,torch:fp32",
                                env={CRASH_ENV: "torch:bf16"})
    rows = rows_by_config(report)
    assert list(rows) == ["bogus:fp32", "torch:bf16", "torch:fp32"]
    assert rows["bogus:fp32"]["status"].startswith("failed: ValueError: backend must be one of")
    assert rows["torch:bf16"]["status"] == "crashed: killed by SIGABRT, no result written"
    assert rows["torch:fp32"]["status"] == "ok" and rows["torch:fp32"]["max_diff"] == 0
    assert rows["torch:fp32"]["speedup"] is None  # its reference, eager bf16, crashed
    assert set(report["errors"]) == {"bogus:fp32", "torch:bf16"}
    assert "Traceback" in report["errors"]["bogus:fp32"]
    assert "[2/3] torch:bf16: crashed: killed by SIGABRT" in completed.stdout
    latency, speedup = report["goals"][:2]
    assert latency["config"] == "torch:fp32" and latency["passed"] is not None
    assert speedup["passed"] is None and "was not measured" in speedup["detail"]


def _row(backend: str, dtype: str, total_ms: float | None, p99: float | None = None, speedup: float | None = None,
         status: str = "ok") -> Row:
    return Row(backend, dtype, 768, 1024, 4, status, total_ms=total_ms, p99_diff=p99, speedup=speedup)


def test_goal_verdicts():
    rows = [_row("torch", "fp32", 900.0, 0.0, 0.2), _row("torch", "bf16", 180.0, 0.004, 1.0),
            _row("torch_cuda_graph", "bf16", 80.0, float("nan"), 2.25), _row("torch", "fp16", None, status="failed: X")]
    latency, speedup, *deviations = judge_goals(rows, GPU_PLAN)
    assert (latency.config, latency.value, latency.passed) == ("torch_cuda_graph:bf16", 80.0, True)
    assert "1024x768 x 4 steps" in latency.name
    assert (speedup.value, speedup.passed) == (2.25, True)
    assert [(goal.config, goal.passed) for goal in deviations] == [
        ("torch:bf16", True), ("torch_cuda_graph:bf16", False), ("torch:fp16", None)]  # NaN fails
    assert deviations[2].detail == "failed: X"
    nothing = judge_goals([_row("torch", "fp32", None, status="crashed: killed by SIGSEGV")], DRY_RUN_PLAN)
    assert [goal.passed for goal in nothing] == [None, None]


def test_a_process_past_its_timeout_is_killed_and_its_output_kept():
    code, output = run_process([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 1)
    assert code is None and output == "started\n"


@pytest.mark.skipif(gpu_check.torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_only_the_dry_run_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([])
    assert exit_info.value.code == 2 and "use --dry-run" in capsys.readouterr().err
