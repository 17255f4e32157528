"""Benchmark of the PPD image path per stage, for each backend, precision, size and step count.

For every configuration (backend, dtype, processing size, Euler steps) it runs one frame through the
node's stages, ``--repeats`` times after ``--warmup`` untimed runs, and prints the median ms per stage:

- decode: a bgr8 ``sensor_msgs/Image`` (a seeded camera frame at the processing size) -> RGB
  (``ros.conversions.image_to_rgb8``; no JPEG decode);
- preprocess: ``resize_to_processing`` + ``image_to_tensor`` + copy of the image and noise to the device;
- semantics: ``backend.encode``;
- sampling: ``backend.sample`` (the whole Euler loop: backends expose only the loop, so "DiT step" is
  sampling / steps);
- depth decode: device -> host copy and ``fixed_range`` decoding (0.5 .. 10 m);
- filter: ``remove_flying_pixels`` (relative threshold 0.05, 8-connectivity);
- cloud: ``point_cloud`` xyzrgb packing (``ros.pointcloud``).

Total is the sum of the stage medians. Ratios ("speed-up") are the ``torch`` fp32 eager total divided
by the configuration's, both measured in the same run at the same size and steps. Ideal ms = FLOP
(``inference.flops``: the semantics encoder once + steps DiT forwards) / the device's peak for that
dtype (datasheet on known GPUs; on a CPU a matmul measured in the same run), and "% of peak" = ideal ms
/ model ms (semantics + sampling). Quality: max and p99 of |n - n_torch_fp32| over the pixels, n the
normalised log-depth, same image and same seeded noise. Peak memory: ``torch.cuda.max_memory_allocated``
on CUDA (weights included); on a CPU the growth of the process's peak RSS during the configuration
(``resource.getrusage``: 0 when it stayed below an earlier peak).

    ppd-bench [--sizes 1024x768,768x576,512x384] [--steps 1,2,4] [--backends torch,onnxruntime,...]
        [--dtypes fp32,fp16,bf16] [--architecture bundled|official] [--repeats 5] [--warmup 1]
        [--device cuda] [--threads N] [--engine-dir DIR] [--json PATH] [--smoke]

Defaults on CUDA: the three sizes above, the official architecture (random weights), fp32/fp16/bf16;
on a CPU: 128x96 (the bundled model's processing size), 256x192 and 512x384, the bundled tiny model, fp32 and bf16 (when CPU autocast runs bf16).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from torch import nn

from ..geometry.decoding import make_decoder
from ..geometry.filters import remove_flying_pixels
from ..inference import bundled
from ..inference.backends import BACKENDS, DTYPES, BackendOptions, create_backend
from ..inference.checkpoints import load_ppd_dit, load_semantics_encoder
from ..inference.flops import Peak, device_peak, ppd_image_flops
from ..inference.pipeline import seeded_noise
from ..inference.preprocess import image_to_tensor, resize_to_processing
from ..model.dit import DiT
from ..model.flow import sampling_timesteps
from ..model.random_weights import randomize_
from ..model.semantics import DepthAnythingV2Semantics
from ..ros.conversions import image_to_rgb8
from ..ros.pointcloud import point_cloud
from .cli import image_size, non_negative_int, positive_int, torch_threads

BASELINE = ("torch", "fp32")
"""(backend, dtype) every ratio and quality figure is measured against."""
STAGES = ("decode", "preprocess", "semantics", "sampling", "depth_decode", "filter", "cloud")
CUDA_SIZES = ((768, 1024), (576, 768), (384, 512))
"""Default (H, W) on CUDA."""
CPU_SIZES = ((96, 128), (192, 256), (384, 512))
"""Default (H, W) on a CPU: the bundled model's own 128x96 (``bundled.TARGET_AREA``, what the node runs it at) and larger."""
SMOKE_SIZES = ((48, 64),)
NEAR_M, FAR_M = 0.5, 10.0
"""``fixed_range`` decoding range of the depth-decode stage."""
FLYING_THRESHOLD = 0.05
NOISE_SEED, IMAGE_SEED = 0, 1
COLUMNS = ("backend", "dtype", "steps", "decode", "preprocess", "semantics", "DiT step", "sampling", "depth decode",
           "filter", "cloud", "total ms", "speed-up", "model ms", "TFLOP", "ideal ms", "% of peak", "peak MiB",
           "max diff", "p99 diff", "note")
"""Columns of the printed tables (stage columns in ms)."""


# ------------------------------------------------------------------------------------------------
# Models and inputs
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


@dataclass
class Frame:
    """One camera frame at a processing size and what its stages need."""

    height: int
    width: int
    message: Image  # bgr8, height x width
    noise: torch.Tensor  # (1, 1, H, W) float32, CPU, seeded
    P: np.ndarray  # (3, 4) projection matrix, px
    header: Header


def camera_frame(height: int, width: int) -> Frame:
    """A seeded smooth random bgr8 frame (blobs and fine texture), its noise and a pinhole P."""
    rng = np.random.default_rng(IMAGE_SEED)
    blobs = cv2.resize(rng.uniform(0, 255, (6, 8, 3)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    bgr = np.clip(blobs + rng.normal(0, 8, blobs.shape), 0, 255).astype(np.uint8)  # (H, W, 3)
    message = Image(height=height, width=width, encoding="bgr8", step=3 * width, data=bgr.tobytes())
    f = 0.8 * width
    P = np.array([[f, 0.0, width / 2, 0.0], [0.0, f, height / 2, 0.0], [0.0, 0.0, 1.0, 0.0]])
    noise = seeded_noise((1, 1, height, width), NOISE_SEED)
    return Frame(height, width, message, noise, P, Header(frame_id="camera_optical_frame"))


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One configuration's figures (times in ms; None where not measured).

    Attributes:
        status: "ok", "unavailable: <why>" (the backend did not start, or fell back) or "failed: <error>".
        stage_ms: median ms per ``STAGES`` entry.
        peak_mib: see the module docstring (CUDA: allocated; CPU: RSS growth).
        max_diff, p99_diff: |n - n_torch_fp32| statistics of the normalised log-depth.
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    """The process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def run_stages(backend, frame: Frame, timesteps: list[int], device: torch.device) -> tuple[dict[str, float], np.ndarray]:
    """One frame through every stage: (ms per stage, (H, W) float32 normalised log-depth)."""
    decoder = make_decoder("fixed_range", near_m=NEAR_M, far_m=FAR_M)
    laps, clock = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        _sync(device)
        now = time.perf_counter()
        laps[stage] = (now - clock) * 1e3
        clock = now

    rgb = image_to_rgb8(frame.message)  # (H, W, 3) uint8
    lap("decode")
    x = image_to_tensor(resize_to_processing(rgb, frame.height * frame.width)).to(device)  # (1, 3, H, W)
    noise = frame.noise.to(device)
    lap("preprocess")
    semantics = backend.encode(x)  # (1, h*w, 1024)
    lap("semantics")
    n = backend.sample(x, semantics, noise, timesteps)  # (1, 1, H, W) float32
    lap("sampling")
    n = n[0, 0].float().cpu().numpy()
    depth_m = decoder(n)
    lap("depth_decode")
    depth_m = remove_flying_pixels(depth_m, FLYING_THRESHOLD, 8)
    lap("filter")
    point_cloud(depth_m, frame.P, frame.header, rgb)
    lap("cloud")
    return laps, n


def measure(backend, frame: Frame, steps: int, device: torch.device, repeats: int,
            warmup: int) -> tuple[dict[str, float], float, np.ndarray]:
    """Median ms per stage over ``repeats`` runs after ``warmup`` runs, the peak memory figure (MiB) and
    the last run's normalised log-depth."""
    timesteps = sampling_timesteps(steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _rss_mib()
    for _ in range(warmup):
        run_stages(backend, frame, timesteps, device)
    runs = []
    for _ in range(repeats):
        laps, n = run_stages(backend, frame, timesteps, device)
        runs.append(laps)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = _rss_mib() - rss_before
    return {stage: statistics.median(run[stage] for run in runs) for stage in STAGES}, peak, n


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _fallback_reason(name: str, fallback: str) -> str:
    """The why of ``create_backend``'s fallback message ("backend X unavailable (why); running torch instead")."""
    head, tail = f"backend {name} unavailable (", "); running torch instead"
    return fallback[len(head):-len(tail)] if fallback.startswith(head) and fallback.endswith(tail) else fallback


def run_all(dit: nn.Module, encoder: nn.Module, args: argparse.Namespace, peaks: dict[str, Peak]) -> list[Row]:
    """Every (backend, dtype), then every size and step count; the baseline first (its outputs are the
    quality reference). Each backend is built once (shape range = the largest size) and freed after."""
    device = torch.device(args.device)
    frames = {size: camera_frame(*size) for size in args.sizes}
    options = BackendOptions(engine_file_path=args.engine_dir, max_height=max(h for h, _ in args.sizes),
                             max_width=max(w for _, w in args.sizes))
    configs = [BASELINE] + [(b, d) for b in args.backends for d in args.dtypes if (b, d) != BASELINE]
    reference: dict[tuple, tuple[float, np.ndarray]] = {}  # (H, W, steps) -> (baseline total, depth)
    rows = []
    for name, dtype in configs:
        try:
            backend, fallback = create_backend(name, dit, encoder, device, dtype, options)
            status = f"unavailable: {_fallback_reason(name, fallback)}" if fallback else "ok"
        except Exception as error:  # a backend whose module or package is missing is reported, not fatal
            backend, status = None, f"unavailable: {_reason(error)}"
        for height, width in args.sizes:
            if status != "ok":
                rows.append(Row(name, dtype, height, width, None, status))
                continue
            for steps in args.steps:
                row = Row(name, dtype, height, width, steps)
                rows.append(row)
                try:
                    stage_ms, row.peak_mib, depth = measure(backend, frames[height, width], steps, device,
                                                            args.repeats, args.warmup)
                except Exception as error:
                    row.status = f"failed: {_reason(error)}"
                    continue
                fill_row(row, stage_ms, depth, reference, dit, encoder, peaks[dtype])
        del backend
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def fill_row(row: Row, stage_ms: dict[str, float], depth: np.ndarray, reference: dict, dit: nn.Module,
             encoder: nn.Module, peak: Peak) -> None:
    """Derived figures of a measured row; the first row at a size/steps (the baseline) becomes the reference."""
    key = (row.height, row.width, row.steps)
    row.stage_ms = stage_ms
    row.total_ms = sum(stage_ms.values())
    row.model_ms = stage_ms["semantics"] + stage_ms["sampling"]
    if key not in reference:
        reference[key] = (row.total_ms, depth)
    base_total, base_depth = reference[key]
    row.speedup = base_total / row.total_ms
    diff = np.abs(depth.astype(np.float64) - base_depth)
    row.max_diff, row.p99_diff = float(diff.max()), float(np.percentile(diff, 99))
    flop = ppd_image_flops(dit, encoder, row.height, row.width, row.steps)
    row.tflop = flop / 1e12
    if peak.tflops:
        row.ideal_ms = flop / (peak.tflops * 1e12) * 1e3
        row.peak_fraction = row.ideal_ms / row.model_ms


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    """Milliseconds with 3 significant-ish digits (tiny stages stay readable)."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def format_row(row: Row) -> str:
    if row.status != "ok":
        cells = [row.backend, row.dtype, "-" if row.steps is None else str(row.steps)]
        cells += ["-"] * (len(COLUMNS) - 4) + [row.status]
        return "| " + " | ".join(cells) + " |"
    s = row.stage_ms
    cells = [row.backend, row.dtype, str(row.steps), _ms(s["decode"]), _ms(s["preprocess"]), _ms(s["semantics"]),
             _ms(s["sampling"] / row.steps), _ms(s["sampling"]), _ms(s["depth_decode"]), _ms(s["filter"]),
             _ms(s["cloud"]), _ms(row.total_ms), _fmt(row.speedup), _ms(row.model_ms), f"{row.tflop:.4g}",
             _ms(row.ideal_ms), "-" if row.peak_fraction is None else f"{100 * row.peak_fraction:.1f}",
             _fmt(row.peak_mib, 1), f"{row.max_diff:.2e}", f"{row.p99_diff:.2e}",
             "baseline" if (row.backend, row.dtype) == BASELINE else ""]
    return "| " + " | ".join(cells) + " |"


def format_tables(rows: list[Row], sizes: list[tuple[int, int]]) -> str:
    """One markdown table per size, rows by (backend, dtype, steps) in run order."""
    align = "|" + "|".join("---" if c in ("backend", "dtype", "note") else "---:" for c in COLUMNS) + "|"
    out = []
    for height, width in sizes:
        out += ["", f"### {width}x{height} (W x H)", "", "| " + " | ".join(COLUMNS) + " |", align]
        out += [format_row(row) for row in rows if (row.height, row.width) == (height, width)]
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


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def _list_of(item_type, what: str):
    """argparse type: a comma-separated list of ``item_type`` values, at least one."""
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [item_type(item) for item in items]
    return parse


def _choice(choices):
    """argparse type: one of ``choices``."""
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppd-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_list_of(image_size, "WIDTHxHEIGHT"), default=None,
                        help="processing sizes, WIDTHxHEIGHT multiples of 16 (default: 1024x768,768x576,512x384 "
                             "on CUDA, 128x96,256x192,512x384 on a CPU)")
    parser.add_argument("--steps", type=_list_of(positive_int, "step counts"), default=[1, 2, 4],
                        help="Euler step counts (default: 1,2,4)")
    parser.add_argument("--backends", type=_list_of(_choice(BACKENDS), "backends"), default=list(BACKENDS),
                        help=f"backends (default: all: {','.join(BACKENDS)}; torch fp32 always runs as the baseline)")
    parser.add_argument("--dtypes", type=_list_of(_choice(tuple(DTYPES)), "dtypes"), default=None,
                        help="precisions (default: fp32,fp16,bf16 on CUDA; fp32,bf16 on a CPU where autocast runs bf16)")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=None,
                        help="bundled (trained tiny model) or official (full size, random weights) "
                             "(default: official on CUDA, bundled on a CPU)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per configuration (default: 5)")
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed runs first (default: 1)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--engine-dir", default="", help="folder for exported graphs and engines (default: the backends')")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="CI-sized run: 64x48, the steps given, 1 repeat, no warm-up, small peak matmul")
    return parser


def cpu_bf16_works() -> bool:
    """Whether CPU autocast runs a bf16 linear here."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    except RuntimeError:
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line and fill the device-dependent defaults (exits with status 2 on bad values)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be a cpu or cuda device, got {args.device!r}")
    cuda = device.type == "cuda"
    if args.smoke:
        args.sizes, args.repeats, args.warmup = list(SMOKE_SIZES), 1, 0
    if args.sizes is None:
        args.sizes = list(CUDA_SIZES if cuda else CPU_SIZES)
    if args.dtypes is None:
        args.dtypes = ["fp32", "fp16", "bf16"] if cuda else ["fp32"] + (["bf16"] if cpu_bf16_works() else [])
    if args.architecture is None:
        args.architecture = "official" if cuda else "bundled"
    return args


def header_lines(args: argparse.Namespace, device: torch.device, dit: nn.Module, encoder: nn.Module,
                 peaks: dict[str, Peak]) -> list[str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    millions = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    weights = "trained" if args.architecture == "bundled" else "random weights"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"ppd-bench {now} | device {name} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
        f"architecture {args.architecture} ({weights}: DiT {millions(dit):.1f} M, encoder {millions(encoder):.1f} M "
        f"parameters) | median of {args.repeats} runs after {args.warmup} warm-up",
        "peaks for the ideal times: " + "; ".join(
            f"{dtype} {_fmt(peak.tflops, 3)} TFLOP/s ({peak.label})" for dtype, peak in peaks.items()),
        "stages (ms): decode = bgr8 Image -> RGB (image_to_rgb8, frame at the processing size); DiT step = "
        "sampling / steps (the backends run the whole loop); depth decode = copy to host + fixed_range; "
        "filter = flying pixels; cloud = xyzrgb PointCloud2; total = sum of the stage medians; speed-up = "
        "torch fp32 total / total; model ms = semantics + sampling; % of peak = ideal ms / model ms; "
        + ("peak MiB = torch.cuda.max_memory_allocated" if device.type == "cuda"
           else "peak MiB = growth of the process's peak RSS (0: below an earlier peak)")
        + "; diffs = |normalised log-depth - torch fp32's|, same image and noise"
        + ("" if args.architecture == "bundled" else " (random weights: diffs show numerics only)"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The benchmark of the parsed ``args``: prints the tables; returns the exit status."""
    device = torch.device(args.device)
    dit, encoder = ARCHITECTURES[args.architecture](device)
    dit, encoder = dit.eval().requires_grad_(False), encoder.eval().requires_grad_(False)
    matmul = 256 if args.smoke else 2048  # halved for bf16/fp16 on a CPU, ~20x slower there without AMX
    peaks = {dtype: device_peak(device, dtype, matmul if dtype == "fp32" or device.type == "cuda" else matmul // 2)
             for dtype in dict.fromkeys(["fp32"] + args.dtypes)}
    for line in header_lines(args, device, dit, encoder, peaks):
        print(line)
    sys.stdout.flush()
    rows = run_all(dit, encoder, args, peaks)
    print(format_tables(rows, args.sizes))
    print()
    for line in fastest_lines(rows, args.sizes, args.steps, device, args.architecture):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "header": header_lines(args, device, dit, encoder, peaks),
            "peaks": {dtype: asdict(peak) for dtype, peak in peaks.items()},
            "rows": [asdict(row) for row in rows],
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
