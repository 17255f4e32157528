"""The GPU check of the PPD image path: each (backend, dtype) configuration timed in a process of its own,
the ``ppd-bench`` table of the results, and the goals judged on it (``scripts/gpu_check.sh``).

Parent (``run_check``): starts one child per configuration (``child_command`` + ``--config BACKEND:DTYPE
--work-dir DIR``), each with a timeout and all within a time budget, so that a configuration that fails,
crashes (a CUDA error that poisons its context included) or hangs is reported while the others still run.
It then computes the depth deviations against the ``DEVIATION_REFERENCE`` child's depth, the speed-ups
against ``SPEED_REFERENCE``'s total, judges the goals and runs the CUDA-graph parity tests.

Child (``run_config``): builds the models of the plan (seeded: identical weights in every child), times one
frame ``repeats`` times after ``warmup`` runs and writes ``<backend>_<dtype>.json`` (its ``Row``, the device,
the peak, or its error) and ``<backend>_<dtype>.npy`` (its (H, W) float32 normalised log-depth) to the work
folder. Stages of the frame: preprocess (the seeded (H, W, 3) uint8 RGB image on the host -> resized,
float tensor on the device, uploaded as the pipeline does; the seeded noise waits on the device),
semantics (``encode``), sampling (``sample``: the whole Euler loop), depth_decode (the normalised depth to the host as float32 numpy: the node's conversion to
metres is CPU work and left out); total = image -> depth.
Timing: CUDA events on the current stream on CUDA (the GPU's timeline: host work the GPU waits for
included), the wall clock on a CPU. "% of peak" is against the dense bf16 peak for every dtype.
"""
from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch import nn

from ..model.dinov2 import DinoVisionTransformer
from ..model.dit import SEMANTICS_DIM, DiT
from ..model.random_weights import randomize_
from ..model.semantics import DepthAnythingV2Semantics
from .backends import BackendOptions, BackendUnavailable
from .backends.base import backend_class, error_summary
from .benchmark import BASELINE, Row, StageRun, build_models, depth_deviation, fill_times, measure
from .benchmark_report import device_label, format_tables
from .flops import Peak, device_peak
from .preprocess import image_to_device, resize_to_processing
from .sampling import check_dtype, seeded_noise
from .timing import StageTimer

Config = tuple[str, str]
"""(backend, dtype)."""
CONFIGS: tuple[Config, ...] = (("torch", "fp32"), ("torch", "bf16"), ("torch", "fp16"), ("torch_cuda_graph", "bf16"),
                               ("torch_cuda_graph", "fp16"), ("onnxruntime", "fp16"))
"""The configurations checked, in the table's order."""
DEVIATION_REFERENCE: Config = BASELINE
"""The configuration whose depth every deviation is measured against (same image, same noise)."""
SPEED_REFERENCE: Config = ("torch", "bf16")
"""The configuration whose total every speed-up is measured against (eager bf16)."""
LATENCY_GOAL_MS = 100.0
"""Goal: image -> depth of the best configuration under this, ms."""
SPEEDUP_GOAL = 2.0
"""Goal: the best configuration more than this many times faster than ``SPEED_REFERENCE``."""
P99_GOAL = 0.01
"""Goal: p99 |deviation| from ``DEVIATION_REFERENCE`` of each configuration at most this (normalised depth)."""
CRASH_ENV = "PPD_GPU_CHECK_CRASH"
"""Comma-separated configuration names whose child aborts (SIGABRT) before it starts: tests the isolation."""
NOISE_SEED, IMAGE_SEED = 0, 1
TAIL_LINES = 25
"""Lines of a failed process's output kept in the report."""
PARITY_TESTS = "test/unit/test_cuda_graph_backend.py"
"""The CUDA-graph parity tests, relative to the source tree."""
SOURCE_TREE = Path(__file__).resolve().parents[2]
"""The folder holding ``pixel_perfect_ros/`` (and, in a source checkout, ``test/``)."""
COLUMNS = ("backend", "dtype", "steps", "preprocess", "semantics", "DiT step", "sampling", "depth decode", "total ms",
           "first call ms", "speed-up", "model ms", "TFLOP", "ideal ms", "% of peak", "peak MiB", "max diff",
           "p99 diff", "note")
"""Columns of the printed table (``benchmark_report.row_cells``)."""


@dataclass(frozen=True)
class Plan:
    """What every configuration runs.

    Attributes:
        architecture: a ``MODELS`` name.
        device: "cuda" or "cpu".
        height, width: processing size, px.
        steps: Euler steps.
        repeats, warmup: timed runs (their median is reported) and untimed runs before them.
        peak_matmul: side of the matmul that measures the bf16 peak where no datasheet figure is known.
    """

    architecture: str
    device: str
    height: int
    width: int
    steps: int
    repeats: int
    warmup: int
    peak_matmul: int

    @property
    def dry_run(self) -> bool:
        return self.device == "cpu"


GPU_PLAN = Plan("official", "cuda", 768, 1024, 4, repeats=10, warmup=3, peak_matmul=4096)
"""Full-size DiT and DA2 ViT-L (seeded random weights), 1024x768, 4 steps."""
DRY_RUN_PLAN = Plan("tiny", "cpu", 64, 64, 2, repeats=1, warmup=0, peak_matmul=128)
"""The tiny random model on the CPU, 64x64, 2 steps: the structure of the check, not its times."""


def tiny_models(device: torch.device) -> tuple[nn.Module, nn.Module]:
    """``benchmark.official_models``' recipe at a tiny size: a DiT of width 64 and depth 2 and a one-block DA2
    encoder (1024 wide: the width of the semantics the DiT takes), seeded random weights, on ``device`` in eval
    mode without gradients."""
    with torch.device("meta"):
        dit = DiT(hidden_size=64, depth=2, num_heads=2)
        encoder = DepthAnythingV2Semantics(DinoVisionTransformer(embed_dim=SEMANTICS_DIM, depth=1, num_heads=16,
                                                                 pos_grid=4))
    return tuple(randomize_(module.to_empty(device=device), seed).eval().requires_grad_(False)
                 for module, seed in ((dit, 1), (encoder, 2)))


MODELS: dict[str, Callable[[torch.device], tuple[nn.Module, nn.Module]]] = {
    "official": partial(build_models, "official"), "tiny": tiny_models}
"""(DiT, semantics encoder) builders by ``Plan.architecture``: the full size (``GPU_PLAN``), the dry run's."""


def config_name(config: Config) -> str:
    """``backend:dtype``."""
    return ":".join(config)


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])


# ------------------------------------------------------------------------------------------------
# Child: one configuration
# ------------------------------------------------------------------------------------------------

@dataclass
class Frame:
    """The input every configuration gets."""

    rgb: np.ndarray  # (H, W, 3) uint8, host
    noise: torch.Tensor  # (1, 1, H, W) float32, on the device (as the pipeline's ``DeviceNoise`` keeps it)


def seeded_frame(height: int, width: int, device: torch.device) -> Frame:
    """A seeded smooth random RGB image (blobs and fine texture) of ``height`` x ``width`` px and its noise."""
    rng = np.random.default_rng(IMAGE_SEED)
    blobs = cv2.resize(rng.uniform(0, 255, (6, 8, 3)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    rgb = np.clip(blobs + rng.normal(0, 8, blobs.shape), 0, 255).astype(np.uint8)
    return Frame(rgb, seeded_noise((1, 1, height, width), NOISE_SEED).to(device))


class CudaEventTimer:
    """``StageTimer``'s interface timed by CUDA events recorded on the current stream: ``ms`` (read after the
    last event completed) adds the time between consecutive laps to each stage, in ms."""

    def __init__(self):
        self._laps: list[tuple[str, torch.cuda.Event]] = [("", self._record())]

    @staticmethod
    def _record() -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def lap(self, stage: str) -> None:
        self._laps.append((stage, self._record()))

    @property
    def ms(self) -> dict[str, float]:
        self._laps[-1][1].synchronize()
        ms: dict[str, float] = {}
        for (_, start), (stage, end) in zip(self._laps, self._laps[1:]):
            ms[stage] = ms.get(stage, 0.0) + start.elapsed_time(end)
        return ms


@torch.inference_mode()
def image_to_depth(backend, frame: Frame, device: torch.device,
                   timesteps: list[int]) -> tuple[dict[str, float], np.ndarray]:
    """One frame from the host image to the depth on the host: (ms per stage, (H, W) float32 normalised
    log-depth)."""
    timer = CudaEventTimer() if device.type == "cuda" else StageTimer(device)
    height, width = frame.rgb.shape[:2]
    x = image_to_device(resize_to_processing(frame.rgb, height * width), device)  # (1, 3, H, W), as the pipeline
    timer.lap("preprocess")
    semantics = backend.encode(x)
    timer.lap("semantics")
    n = backend.sample(x, semantics, frame.noise, timesteps)  # (1, 1, H, W) float32
    timer.lap("sampling")
    n = n[0, 0].float().cpu().numpy()
    timer.lap("depth_decode")
    return timer.ms, n


class FirstCallTimed:
    """A ``StageRun`` that keeps the wall ms of its first call in ``first_ms`` (its results are on the host
    when it returns, so this is until the depth is there)."""

    def __init__(self, run: StageRun):
        self.run, self.first_ms = run, None

    def __call__(self, timesteps: list[int]) -> tuple[dict[str, float], np.ndarray]:
        start = time.perf_counter()
        result = self.run(timesteps)
        if self.first_ms is None:
            self.first_ms = (time.perf_counter() - start) * 1e3
        return result


def result_paths(work_dir: Path, config: Config) -> tuple[Path, Path]:
    """The child's (JSON result, .npy depth) files in ``work_dir``."""
    stem = re.sub(r"[^\w.-]", "_", "_".join(config))
    return work_dir / f"{stem}.json", work_dir / f"{stem}.npy"


def measure_config(row: Row, plan: Plan, work_dir: Path) -> Peak | None:
    """Time ``row``'s configuration and fill the row (status "not run: <why>" when the backend cannot run
    here); the depth goes to its .npy file. Returns the bf16 peak of "% of peak" (None when not run)."""
    backend_cls = backend_class(row.backend)  # an unknown name fails before the models are built
    check_dtype(row.dtype)
    device = torch.device(plan.device)
    dit, encoder = MODELS[plan.architecture](device)
    options = BackendOptions(engine_file_path=str(work_dir / "engines"), max_height=plan.height, max_width=plan.width)
    try:
        backend = backend_cls(dit, encoder, device, row.dtype, options)
    except BackendUnavailable as error:
        row.status = f"not run: {error}"
        return None
    run = FirstCallTimed(partial(image_to_depth, backend, seeded_frame(plan.height, plan.width, device), device))
    stage_ms, row.peak_mib, depth = measure(run, plan.steps, device, plan.repeats, plan.warmup)
    peak = device_peak(device, "bf16", plan.peak_matmul)
    fill_times(row, stage_ms, dit, encoder, peak)
    row.first_call_ms = run.first_ms
    np.save(result_paths(work_dir, (row.backend, row.dtype))[1], depth)
    return peak


def run_config(config: Config, plan: Plan, work_dir: Path) -> int:
    """The child: measure ``config`` and write its result file (``result_paths``); 0 when it was measured
    or cannot run here, 1 when it failed (the error is in the file)."""
    if config_name(config) in os.environ.get(CRASH_ENV, "").split(","):
        os.abort()
    row = Row(*config, plan.height, plan.width, plan.steps)
    result = {"row": None, "device": None, "peak": None, "error": None}
    try:
        result["device"] = device_label(torch.device(plan.device))
        peak = measure_config(row, plan, work_dir)
        result["peak"] = None if peak is None else asdict(peak)
    except Exception as error:  # reported in the result; the parent goes on with the next configuration
        row.status = f"failed: {error_summary(error, first_line=True)}"
        result["error"] = _tail(traceback.format_exc())
    result["row"] = asdict(row)
    path = result_paths(work_dir, config)[0]
    partial_path = path.with_suffix(".partial")
    partial_path.write_text(json.dumps(result))
    partial_path.replace(path)  # the parent sees the whole file or none
    return 1 if result["error"] else 0


# ------------------------------------------------------------------------------------------------
# Parent: every configuration, the goals, the parity tests
# ------------------------------------------------------------------------------------------------

def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group that ``process`` leads (it and whatever it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_process(command: list[str], timeout_s: float, cwd: Path | None = None) -> tuple[int | None, str]:
    """Run ``command`` in a session of its own: (exit status, or None when it ran past ``timeout_s`` s and
    its process group was killed; stdout and stderr together). An interrupt of the caller kills it too."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output = process.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return None, process.communicate()[0]
    except BaseException:  # Ctrl-C: the child, in a session of its own, did not get it
        _kill_group(process)
        process.wait()
        raise
    return process.returncode, output


@dataclass
class ChildOutcome:
    """What the parent knows of one configuration: its row, the error text (None when it has none) and the
    device and peak the child reported."""

    row: Row
    error: str | None = None
    device: str | None = None
    peak: dict | None = None


def _exit_description(code: int) -> str:
    """"exit status N", or "killed by SIGNAME" for a negative ``code``."""
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def run_child(config: Config, plan: Plan, child_command: list[str], work_dir: Path, timeout_s: float) -> ChildOutcome:
    """One configuration in its own process: its result file, or the crash or timeout and the output tail."""
    result_path, depth_path = result_paths(work_dir, config)
    result_path.unlink(missing_ok=True)
    depth_path.unlink(missing_ok=True)
    code, output = run_process(child_command + ["--config", config_name(config), "--work-dir", str(work_dir)],
                               timeout_s)
    if code is None:
        status = f"timed out after {timeout_s:.0f} s"
    elif result_path.exists():
        result = json.loads(result_path.read_text())
        return ChildOutcome(Row(**result["row"]), result["error"], result["device"], result["peak"])
    else:
        status = f"crashed: {_exit_description(code)}, no result written"
    return ChildOutcome(Row(*config, plan.height, plan.width, plan.steps, status), _tail(output) or "(no output)")


def add_comparisons(outcomes: dict[Config, ChildOutcome], work_dir: Path) -> None:
    """Deviations against ``DEVIATION_REFERENCE``'s depth and speed-ups against ``SPEED_REFERENCE``'s total,
    on the rows that ran (left None where the reference did not)."""
    measured = {config: outcome.row for config, outcome in outcomes.items() if outcome.row.status == "ok"}
    if DEVIATION_REFERENCE in measured:
        reference = np.load(result_paths(work_dir, DEVIATION_REFERENCE)[1])
        for config, row in measured.items():
            row.max_diff, row.p99_diff = depth_deviation(np.load(result_paths(work_dir, config)[1]), reference)
    if SPEED_REFERENCE in measured:
        for row in measured.values():
            row.speedup = measured[SPEED_REFERENCE].total_ms / row.total_ms


@dataclass
class Goal:
    """One goal's verdict.

    Attributes:
        name: what is judged, e.g. "p99 deviation of torch:bf16".
        target: the goal, e.g. "<= 0.01".
        config: the configuration judged (None when none could be).
        value: the measured figure, in ``unit``.
        unit: "ms", "x" (a ratio) or "" (normalised depth).
        passed: None when it could not be judged (``detail`` says why).
    """

    name: str
    target: str
    config: str | None
    value: float | None
    unit: str
    passed: bool | None
    detail: str = ""

    @property
    def value_text(self) -> str:
        """The value as printed: ``12.3 ms``, ``2.41x`` or ``3.10e-03``; "-" without one."""
        if self.value is None:
            return "-"
        return {"ms": f"{self.value:.1f} ms", "x": f"{self.value:.2f}x"}.get(self.unit, f"{self.value:.2e}")


def _fastest_goals(rows: list[Row], plan: Plan) -> list[Goal]:
    """The latency and the speed-up of the fastest measured row (not judged when none was measured)."""
    latency = (f"image -> depth at {plan.width}x{plan.height} x {plan.steps} steps, fastest configuration",
               f"< {LATENCY_GOAL_MS:g} ms")
    speedup = (f"speed-up over eager {config_name(SPEED_REFERENCE)}, fastest configuration", f"> {SPEEDUP_GOAL:g}x")
    measured = [row for row in rows if row.status == "ok"]
    if not measured:
        return [Goal(*latency, None, None, "ms", None, "no configuration was measured"),
                Goal(*speedup, None, None, "x", None, "no configuration was measured")]
    best = min(measured, key=lambda row: row.total_ms)
    name = config_name((best.backend, best.dtype))
    if best.speedup is None:
        speedup_goal = Goal(*speedup, name, None, "x", None, f"{config_name(SPEED_REFERENCE)} was not measured")
    else:
        speedup_goal = Goal(*speedup, name, best.speedup, "x", best.speedup > SPEEDUP_GOAL)
    return [Goal(*latency, name, best.total_ms, "ms", best.total_ms < LATENCY_GOAL_MS), speedup_goal]


def _deviation_goal(row: Row) -> Goal:
    """The p99 deviation of one configuration (not judged when it, or the reference, was not measured)."""
    name = config_name((row.backend, row.dtype))
    goal = (f"p99 deviation from {config_name(DEVIATION_REFERENCE)} of {name}", f"<= {P99_GOAL:g}", name)
    if row.status != "ok":
        return Goal(*goal, None, "", None, row.status)
    if row.p99_diff is None:
        return Goal(*goal, None, "", None, f"{config_name(DEVIATION_REFERENCE)} was not measured")
    return Goal(*goal, row.p99_diff, "", bool(row.p99_diff <= P99_GOAL))  # NaN fails


def judge_goals(rows: list[Row], plan: Plan) -> list[Goal]:
    """Latency and speed-up of the fastest measured row, then the p99 deviation of each configuration but the
    deviation reference."""
    return _fastest_goals(rows, plan) + [_deviation_goal(row) for row in rows
                                         if (row.backend, row.dtype) != DEVIATION_REFERENCE]


@dataclass
class ParityTests:
    """The parity tests' outcome: status "passed", "failed: <how>", "timed out after <s> s" or "not run: <why>"."""

    command: str
    status: str
    output_tail: str = ""


def run_parity_tests(plan: Plan, timeout_s: float) -> ParityTests:
    """``python -m pytest -q`` of ``PARITY_TESTS`` in the source tree (CUDA runs only: they need a GPU)."""
    command = [sys.executable, "-m", "pytest", "-q", PARITY_TESTS]
    text = " ".join(command)
    if plan.dry_run:
        return ParityTests(text, "not run: dry run (the parity tests compare on CUDA)")
    if importlib.util.find_spec("pytest") is None:
        return ParityTests(text, "not run: pytest is not importable")
    if not (SOURCE_TREE / PARITY_TESTS).exists():
        return ParityTests(text, f"not run: {SOURCE_TREE / PARITY_TESTS} is missing (no source tree)")
    code, output = run_process(command, timeout_s, cwd=SOURCE_TREE)
    if code is None:
        return ParityTests(text, f"timed out after {timeout_s:.0f} s", _tail(output))
    return ParityTests(text, "passed" if code == 0 else f"failed: {_exit_description(code)}", _tail(output))


@dataclass
class CheckReport:
    """Everything the check found (what ``gpu_check.json`` holds)."""

    date: str
    dry_run: bool
    device: str
    torch: str
    plan: Plan
    peak: dict | None
    rows: list[Row]
    errors: dict[str, str]
    child_seconds: dict[str, float]
    goals: list[Goal]
    parity_tests: ParityTests

    @property
    def broke(self) -> bool:
        """Whether the check itself broke: no configuration was measured (goals failing do not count)."""
        return not any(row.status == "ok" for row in self.rows)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "broke": self.broke}, indent=1)


def run_check(plan: Plan, configs: list[Config], child_command: list[str], work_dir: Path, *, timeout_s: float,
              budget_s: float, tests_timeout_s: float, log: Callable[[str], None] = print) -> CheckReport:
    """Every configuration in a child of its own (at most ``timeout_s`` s each, none started once ``budget_s``
    s have passed), the comparisons, the goals and the parity tests; ``log`` gets a line per configuration
    and the error of each that failed."""
    log(f"gpu_check: {len(configs)} configurations, {plan.architecture} model on {plan.device}, {plan.width}x"
        f"{plan.height} x {plan.steps} steps, one process each (timeout {timeout_s:.0f} s, budget {budget_s:.0f} s)")
    deadline = time.monotonic() + budget_s
    outcomes: dict[Config, ChildOutcome] = {}
    seconds: dict[str, float] = {}
    for index, config in enumerate(configs, 1):
        name = config_name(config)
        remaining = deadline - time.monotonic()
        start = time.monotonic()
        if remaining <= 0:
            outcome = ChildOutcome(Row(*config, plan.height, plan.width, plan.steps,
                                       f"not run: the time budget of {budget_s:.0f} s was spent"))
        else:
            outcome = run_child(config, plan, child_command, work_dir, min(timeout_s, remaining))
        seconds[name] = time.monotonic() - start
        outcomes[config] = outcome
        log(f"[{index}/{len(configs)}] {name}: {outcome.row.status} ({seconds[name]:.1f} s)")
        if outcome.error:
            log("    " + outcome.error.replace("\n", "\n    "))
    add_comparisons(outcomes, work_dir)
    rows = [outcome.row for outcome in outcomes.values()]
    reported = [outcome for outcome in outcomes.values() if outcome.device]
    return CheckReport(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), dry_run=plan.dry_run,
        device=reported[0].device if reported else "unknown (no configuration reported it)", torch=torch.__version__,
        plan=plan, peak=next((outcome.peak for outcome in reported if outcome.peak), None), rows=rows,
        errors={config_name(config): outcome.error for config, outcome in outcomes.items() if outcome.error},
        child_seconds=seconds, goals=judge_goals(rows, plan), parity_tests=run_parity_tests(plan, tests_timeout_s))


# ------------------------------------------------------------------------------------------------
# The printed report
# ------------------------------------------------------------------------------------------------

def reference_note(row: Row) -> str:
    """The note column: which row is the deviation and which the speed-up reference."""
    notes = {DEVIATION_REFERENCE: "deviation reference", SPEED_REFERENCE: "speed-up reference"}
    return notes.get((row.backend, row.dtype), "")


def header_lines(report: CheckReport) -> list[str]:
    """The run's settings, the peak behind "% of peak" and what the columns mean."""
    plan = report.plan
    timing = "CUDA events" if plan.device == "cuda" else "wall clock"
    peak = report.peak or {"tflops": None, "label": "no configuration measured it"}
    tflops = "-" if peak["tflops"] is None else f"{peak['tflops']:.4g}"
    lines = [
        f"gpu_check {report.date} | device {report.device} | torch {report.torch} | architecture {plan.architecture} "
        f"| {plan.width}x{plan.height} x {plan.steps} steps | median of {plan.repeats} runs after {plan.warmup} "
        f"warm-up ({timing}) | one process per configuration",
        f"peak for the ideal times, every dtype: bf16 {tflops} TFLOP/s ({peak['label']})"
        + ("; measured by each child, so it varies between rows" if peak["label"].startswith("measured") else ""),
        "stages (ms): preprocess = host uint8 image -> device tensor (+ noise); semantics = encode; sampling = the "
        "Euler loop; DiT step = sampling / steps; depth decode = normalised depth to the host; total = image -> depth; "
        "first call ms = wall time of the first run (CUDA-graph capture, autotuning included); speed-up = "
        f"{config_name(SPEED_REFERENCE)} total / total; % of peak = ideal ms / model ms; peak MiB = "
        + ("torch.cuda.max_memory_allocated (weights included)" if plan.device == "cuda"
           else "growth of the process's peak RSS")
        + f"; diffs = |normalised log-depth - {config_name(DEVIATION_REFERENCE)}'s|, same image and noise",
    ]
    if report.dry_run:
        lines.append("DRY RUN: tiny model on the CPU; checks the structure of the check, its times and verdicts "
                     "say nothing about the GPU goals")
    return lines


def _verdict(passed: bool | None) -> str:
    return "n/a " if passed is None else "PASS" if passed else "FAIL"


def goal_lines(goals: list[Goal]) -> list[str]:
    """One ``PASS`` / ``FAIL`` / ``n/a`` line per goal."""
    lines = ["goals:"]
    for goal in goals:
        judged = f" ({goal.config}: {goal.value_text})" if goal.value is not None else ""
        lines.append(f"  {_verdict(goal.passed)}  {goal.name} {goal.target}{judged}"
                     + (f": {goal.detail}" if goal.detail else ""))
    return lines


def report_lines(report: CheckReport) -> list[str]:
    """The header, the table, the goals and the parity tests."""
    plan = report.plan
    lines = header_lines(report)
    lines += format_tables(report.rows, [(plan.height, plan.width)], COLUMNS, reference_note).splitlines()
    lines += [""] + goal_lines(report.goals)
    lines += ["", f"parity tests ({report.parity_tests.command}): {report.parity_tests.status}"]
    if report.parity_tests.status != "passed" and report.parity_tests.output_tail:
        lines += ["    " + line for line in report.parity_tests.output_tail.splitlines()]
    return lines
