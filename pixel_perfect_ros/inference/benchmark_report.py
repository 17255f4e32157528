"""Text of ``ppd-bench``'s results: the header lines, one markdown table per size, the fastest configurations
(the tables also print ``gpu_check``'s rows, with columns of its own)."""
from __future__ import annotations

import datetime
from typing import Callable

import torch
from torch import nn

from .benchmark import BASELINE, Row
from .flops import Peak

COLUMNS = ("backend", "dtype", "steps", "decode", "preprocess", "semantics", "DiT step", "sampling", "depth decode",
           "filter", "cloud", "total ms", "speed-up", "model ms", "TFLOP", "ideal ms", "% of peak", "peak MiB",
           "max diff", "p99 diff", "note")
"""Columns of ``ppd-bench``'s tables (stage columns in ms); ``row_cells`` also fills "first call ms"."""


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    """Milliseconds with 3 significant-ish digits (tiny stages stay readable)."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def device_label(device: torch.device) -> str:
    """The CUDA device's name, or "cpu (<instruction set torch uses>)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.backends.cpu.get_cpu_capability()})"


def header_lines(device: torch.device, architecture: str, repeats: int, warmup: int, dit: nn.Module,
                 encoder: nn.Module, peaks: dict[str, Peak]) -> list[str]:
    """The run's settings, the peaks behind the ideal times and what each column means."""
    name = device_label(device)
    millions = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    weights = "trained" if architecture == "bundled" else "random weights"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"ppd-bench {now} | device {name} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
        f"architecture {architecture} ({weights}: DiT {millions(dit):.1f} M, encoder {millions(encoder):.1f} M "
        f"parameters) | median of {repeats} runs after {warmup} warm-up",
        "peaks for the ideal times: " + "; ".join(
            f"{dtype} {_fmt(peak.tflops, 3)} TFLOP/s ({peak.label})" for dtype, peak in peaks.items()),
        "stages (ms): decode = bgr8 Image -> RGB (image_to_rgb8, frame at the processing size); DiT step = "
        "sampling / steps (the backends run the whole loop); depth decode = copy to host + fixed_range; "
        "filter = flying pixels; cloud = xyzrgb PointCloud2; total = sum of the stage medians; speed-up = "
        "torch fp32 total / total; model ms = semantics + sampling; % of peak = ideal ms / model ms; "
        + ("peak MiB = torch.cuda.max_memory_allocated" if device.type == "cuda"
           else "peak MiB = growth of the process's peak RSS (0: below an earlier peak)")
        + "; diffs = |normalised log-depth - torch fp32's|, same image and noise"
        + ("" if architecture == "bundled" else " (random weights: diffs show numerics only)"),
    ]


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def baseline_note(row: Row) -> str:
    """``ppd-bench``'s note of a measured row: "baseline" on torch fp32, the reference of its ratios and diffs."""
    return "baseline" if (row.backend, row.dtype) == BASELINE else ""


def row_cells(row: Row, note: Callable[[Row], str] = baseline_note) -> dict[str, str]:
    """The text of a measured row in every column (``COLUMNS`` and "first call ms"; a stage the row did
    not time, or a figure it lacks: "-")."""
    s = row.stage_ms
    stage = lambda name: _ms(s.get(name))  # noqa: E731
    return {
        "backend": row.backend, "dtype": row.dtype, "steps": str(row.steps), "decode": stage("decode"),
        "preprocess": stage("preprocess"), "semantics": stage("semantics"), "DiT step": _ms(s["sampling"] / row.steps),
        "sampling": stage("sampling"), "depth decode": stage("depth_decode"), "filter": stage("filter"),
        "cloud": stage("cloud"), "total ms": _ms(row.total_ms), "first call ms": _ms(row.first_call_ms),
        "speed-up": _fmt(row.speedup), "model ms": _ms(row.model_ms), "TFLOP": f"{row.tflop:.4g}",
        "ideal ms": _ms(row.ideal_ms),
        "% of peak": "-" if row.peak_fraction is None else f"{100 * row.peak_fraction:.1f}",
        "peak MiB": _fmt(row.peak_mib, 1), "max diff": _sci(row.max_diff), "p99 diff": _sci(row.p99_diff),
        "note": note(row),
    }


def format_row(row: Row, columns: tuple[str, ...] = COLUMNS, note: Callable[[Row], str] = baseline_note) -> str:
    """One table line: ``columns`` (backend, dtype and steps first, note last) of a measured row
    (``row_cells``), or dashes and the status of another."""
    if row.status != "ok":
        cells = [row.backend, row.dtype, "-" if row.steps is None else str(row.steps)]
        cells += ["-"] * (len(columns) - 4) + [row.status]
        return "| " + " | ".join(cells) + " |"
    cells = row_cells(row, note)
    return "| " + " | ".join(cells[column] for column in columns) + " |"


def format_tables(rows: list[Row], sizes: list[tuple[int, int]], columns: tuple[str, ...] = COLUMNS,
                  note: Callable[[Row], str] = baseline_note) -> str:
    """One markdown table of ``columns`` per (H, W) size, rows by (backend, dtype, steps) in run order."""
    align = "|" + "|".join("---" if c in ("backend", "dtype", "note") else "---:" for c in columns) + "|"
    out = []
    for height, width in sizes:
        out += ["", f"### {width}x{height} (W x H)", "", "| " + " | ".join(columns) + " |", align]
        out += [format_row(row, columns, note) for row in rows if (row.height, row.width) == (height, width)]
    return "\n".join(out)


def fastest_lines(rows: list[Row], sizes: list[tuple[int, int]], steps: list[int], device: torch.device,
                  architecture: str) -> list[str]:
    """The fastest configuration per size and steps and, on a CPU, the fastest fp32 backend overall."""
    ok = [row for row in rows if row.status == "ok"]
    lines = []
    for height, width in sizes:
        parts = []
        for n in steps:
            candidates = [row for row in ok if (row.height, row.width, row.steps) == (height, width, n)]
            if candidates:
                best = min(candidates, key=lambda row: row.total_ms)
                parts.append(f"{n} steps: {best.backend} {best.dtype} {_ms(best.total_ms)} ms "
                             f"(x{best.speedup:.2f}, p99 diff {best.p99_diff:.1e})")
        lines.append(f"fastest at {width}x{height}: " + "; ".join(parts))
    if device.type == "cpu":
        totals = {}
        for row in ok:
            if row.dtype == "fp32":
                totals.setdefault(row.backend, []).append(row.total_ms)
        complete = {name: sum(t) for name, t in totals.items()
                    if len(t) == len(sizes) * len(steps)}  # measured at every size and step count
        if complete:
            best = min(complete, key=complete.get)
            ranking = ", ".join(f"{name} {total:.1f} ms" for name, total in sorted(complete.items(), key=lambda kv: kv[1]))
            lines.append(f"fastest CPU backend for the {architecture} model at fp32: {best} "
                         f"(sum of totals over all sizes and steps: {ranking})")
    return lines
