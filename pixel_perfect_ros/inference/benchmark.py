"""The ROS-free core of ``ppd-bench``: the models it runs, how one configuration is measured, and the
figures derived from the measurement.

A configuration (backend, dtype, processing size, Euler steps) runs one frame ``repeats`` times after
``warmup`` untimed runs; each stage's figure is its median ms. Total is the sum of the stage medians.
Speed-up is the ``torch`` fp32 eager total (``BASELINE``) divided by the configuration's, both measured
in the same run at the same size and steps. Ideal ms = FLOP (``inference.flops``: the semantics encoder
once + steps DiT forwards) / the device's peak for that dtype (datasheet on known GPUs; on a CPU a
matmul measured in the same run), and "% of peak" = ideal ms / model ms (semantics + sampling).
Quality: max and p99 of |n - n_torch_fp32| over the pixels, n the normalised log-depth, same image and
same seeded noise. Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA (weights included); on a
CPU the growth of the process's peak RSS during the configuration (``resource.getrusage``: 0 when it
stayed below an earlier peak).
"""
from __future__ import annotations

import resource
import statistics
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..model.dit import DiT
from ..model.flow import sampling_timesteps
from ..model.random_weights import randomize_
from ..model.semantics import DepthAnythingV2Semantics
from . import bundled
from .checkpoints import load_ppd_dit, load_semantics_encoder
from .flops import Peak, device_peak, ppd_image_flops

BASELINE = ("torch", "fp32")
"""(backend, dtype) every ratio and quality figure is measured against."""
STAGES = ("decode", "preprocess", "semantics", "sampling", "depth_decode", "filter", "cloud")
"""The timed stages of one frame, in order."""

StageRun = Callable[[list[int]], tuple[dict[str, float], np.ndarray]]
"""One frame through every stage at the given timesteps: (ms per stage, (H, W) normalised log-depth)."""


# ------------------------------------------------------------------------------------------------
# Models and the device
# ------------------------------------------------------------------------------------------------

def bundled_models(device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The bundled tiny DiT and its MoGe-2 semantics encoder (trained weights), on ``device``."""
    dit = load_ppd_dit(bundled.CHECKPOINT)
    encoder = load_semantics_encoder(bundled.SEMANTICS, bundled.SEMANTICS_TYPE)
    return dit.to(device), encoder.to(device)


def official_models(device: torch.device) -> tuple[nn.Module, nn.Module]:
    """``DiT()`` and the DA2 ViT-L encoder at the released architecture, seeded random weights.

    Built on the meta device and materialised on ``device`` (no training init; ``randomize_`` writes
    every parameter; neither model has buffers).
    """
    with torch.device("meta"):
        dit = DiT()
        encoder = DepthAnythingV2Semantics.from_backbone_name("dinov2_vitl14")
    return randomize_(dit.to_empty(device=device), seed=1), randomize_(encoder.to_empty(device=device), seed=2)


ARCHITECTURES = {"bundled": bundled_models, "official": official_models}
"""Model builders by name (``--architecture``)."""


def build_models(architecture: str, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(DiT, semantics encoder) of ``architecture`` on ``device``, in eval mode without gradients."""
    dit, encoder = ARCHITECTURES[architecture](device)
    return dit.eval().requires_grad_(False), encoder.eval().requires_grad_(False)


def cpu_bf16_works() -> bool:
    """Whether CPU autocast runs a bf16 linear here."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    except RuntimeError:
        return False


def dtype_peaks(device: torch.device, dtypes: list[str], matmul_size: int) -> dict[str, Peak]:
    """The device peak of fp32 and each of ``dtypes`` (``flops.device_peak``).

    On a CPU the bf16/fp16 matmul is ``matmul_size // 2`` on a side (about 20x slower there without AMX).
    """
    return {dtype: device_peak(device, dtype, matmul_size if dtype == "fp32" or device.type == "cuda"
                               else matmul_size // 2)
            for dtype in dict.fromkeys(["fp32"] + dtypes)}


# ------------------------------------------------------------------------------------------------
# One configuration
# ------------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One configuration's figures (times in ms; None where not measured).

    Attributes:
        height, width: processing size, px.
        status: "ok", "unavailable: <why>" (the backend did not start, or fell back) or "failed: <error>";
            ``gpu_check`` also writes "not run: <why>", "crashed: <how>" and "timed out after <s> s".
        stage_ms: median ms per stage run (``STAGES``, or the subset a check times).
        tflop: FLOP of one frame, 10^12.
        peak_fraction: ideal ms / model ms (0..1).
        peak_mib: peak memory, MiB (CUDA: allocated; CPU: peak RSS growth).
        max_diff, p99_diff: |n - n_torch_fp32| statistics of the normalised log-depth.
        first_call_ms: wall ms of the first run until its depth is on the host (capture, autotuning and
            allocation included); None where not measured (``ppd-bench``).
    """

    backend: str
    dtype: str
    height: int
    width: int
    steps: int | None
    status: str = "ok"
    stage_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float | None = None
    speedup: float | None = None
    model_ms: float | None = None
    tflop: float | None = None
    ideal_ms: float | None = None
    peak_fraction: float | None = None
    peak_mib: float | None = None
    max_diff: float | None = None
    p99_diff: float | None = None
    first_call_ms: float | None = None


def _rss_mib() -> float:
    """The process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(run_stages: StageRun, steps: int, device: torch.device, repeats: int,
            warmup: int) -> tuple[dict[str, float], float, np.ndarray]:
    """Median ms per stage (those ``run_stages`` times, in its order) over ``repeats`` runs of ``run_stages``
    after ``warmup`` runs, the peak memory figure (MiB) and the last run's normalised log-depth."""
    timesteps = sampling_timesteps(steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _rss_mib()
    for _ in range(warmup):
        run_stages(timesteps)
    runs = []
    for _ in range(repeats):
        laps, n = run_stages(timesteps)
        runs.append(laps)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = _rss_mib() - rss_before
    return {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}, peak, n


def fill_times(row: Row, stage_ms: dict[str, float], dit: nn.Module, encoder: nn.Module, peak: Peak) -> None:
    """The row's stage medians (ms) and what follows from them alone: total and model ms, FLOP, ideal ms
    at ``peak`` and the fraction of it reached."""
    row.stage_ms = stage_ms
    row.total_ms = sum(stage_ms.values())
    row.model_ms = stage_ms["semantics"] + stage_ms["sampling"]
    flop = ppd_image_flops(dit, encoder, row.height, row.width, row.steps)
    row.tflop = flop / 1e12
    if peak.tflops:
        row.ideal_ms = flop / (peak.tflops * 1e12) * 1e3
        row.peak_fraction = row.ideal_ms / row.model_ms


def depth_deviation(depth: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max, p99) over the pixels of |depth - reference|, two (H, W) normalised log-depths (in float64)."""
    diff = np.abs(depth.astype(np.float64) - reference)
    return float(diff.max()), float(np.percentile(diff, 99))


def fill_row(row: Row, stage_ms: dict[str, float], depth: np.ndarray, reference: dict, dit: nn.Module,
             encoder: nn.Module, peak: Peak) -> None:
    """Derived figures of a measured row (``fill_times``, then the speed-up and diffs against the reference).

    Args:
        reference: (H, W, steps) -> (baseline total ms, baseline depth); the first row at a size and step
            count (the baseline) is added to it.
        peak: the device's peak for the row's dtype.
    """
    fill_times(row, stage_ms, dit, encoder, peak)
    key = (row.height, row.width, row.steps)
    if key not in reference:
        reference[key] = (row.total_ms, depth)
    base_total, base_depth = reference[key]
    row.speedup = base_total / row.total_ms
    row.max_diff, row.p99_diff = depth_deviation(depth, base_depth)
