"""The node's image path as ``ppd-bench`` times it, and the sweep over backends, dtypes, sizes and steps.

Stages of one frame (medians and derived figures: ``inference/benchmark.py``):

- decode: a bgr8 ``sensor_msgs/Image`` (a seeded camera frame at the processing size) -> RGB
  (``conversions.image_to_rgb8``; no JPEG decode);
- preprocess: ``resize_to_processing`` + ``image_to_tensor`` + copy of the image and noise to the device;
- semantics: ``backend.encode``;
- sampling: ``backend.sample`` (the whole Euler loop: backends expose only the loop, so "DiT step" is
  sampling / steps);
- depth decode: device -> host copy and ``fixed_range`` decoding (``NEAR_M`` .. ``FAR_M``);
- filter: ``remove_flying_pixels`` (relative threshold ``FLYING_THRESHOLD``, 8-connectivity);
- cloud: ``point_cloud`` xyzrgb packing (``pointcloud.py``).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import torch
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from torch import nn

from ..geometry.decoding import make_decoder
from ..geometry.filters import remove_flying_pixels
from ..inference.backends import BackendOptions, create_backend
from ..inference.backends.base import error_summary
from ..inference.benchmark import BASELINE, Row, fill_row, measure
from ..inference.flops import Peak
from ..inference.preprocess import image_to_tensor, resize_to_processing
from ..inference.sampling import seeded_noise
from ..inference.timing import StageTimer
from .conversions import image_to_rgb8
from .pointcloud import point_cloud

NEAR_M, FAR_M = 0.5, 10.0
"""``fixed_range`` decoding range of the depth-decode stage, m."""
FLYING_THRESHOLD = 0.05
"""Relative depth jump of the flying-pixel filter."""
NOISE_SEED, IMAGE_SEED = 0, 1


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
    """A seeded smooth random bgr8 frame (blobs and fine texture) of ``height`` x ``width`` px, its noise
    and a pinhole P."""
    rng = np.random.default_rng(IMAGE_SEED)
    blobs = cv2.resize(rng.uniform(0, 255, (6, 8, 3)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    bgr = np.clip(blobs + rng.normal(0, 8, blobs.shape), 0, 255).astype(np.uint8)  # (H, W, 3)
    message = Image(height=height, width=width, encoding="bgr8", step=3 * width, data=bgr.tobytes())
    f = 0.8 * width
    P = np.array([[f, 0.0, width / 2, 0.0], [0.0, f, height / 2, 0.0], [0.0, 0.0, 1.0, 0.0]])
    noise = seeded_noise((1, 1, height, width), NOISE_SEED)
    return Frame(height, width, message, noise, P, Header(frame_id="camera_optical_frame"))


@torch.inference_mode()
def run_stages(backend, frame: Frame, timesteps: list[int],
               device: torch.device) -> tuple[dict[str, float], np.ndarray]:
    """One frame through every stage: (ms per stage, (H, W) float32 normalised log-depth)."""
    decoder = make_decoder("fixed_range", near_m=NEAR_M, far_m=FAR_M)
    timer = StageTimer(device)

    rgb = image_to_rgb8(frame.message)  # (H, W, 3) uint8
    timer.lap("decode")
    x = image_to_tensor(resize_to_processing(rgb, frame.height * frame.width)).to(device)  # (1, 3, H, W)
    noise = frame.noise.to(device)
    timer.lap("preprocess")
    semantics = backend.encode(x)  # (1, h*w, 1024)
    timer.lap("semantics")
    n = backend.sample(x, semantics, noise, timesteps)  # (1, 1, H, W) float32
    timer.lap("sampling")
    n = n[0, 0].float().cpu().numpy()
    depth_m = decoder(n)
    timer.lap("depth_decode")
    depth_m = remove_flying_pixels(depth_m, FLYING_THRESHOLD, 8)
    timer.lap("filter")
    point_cloud(depth_m, frame.P, frame.header, rgb)
    timer.lap("cloud")
    return timer.ms, n


def _fallback_reason(name: str, fallback: str) -> str:
    """The why of ``create_backend``'s fallback message ("backend X unavailable (why); running torch instead")."""
    head, tail = f"backend {name} unavailable (", "); running torch instead"
    return fallback[len(head):-len(tail)] if fallback.startswith(head) and fallback.endswith(tail) else fallback


def run_all(dit: nn.Module, encoder: nn.Module, peaks: dict[str, Peak], device: torch.device, *,
            sizes: list[tuple[int, int]], steps: list[int], backends: list[str], dtypes: list[str],
            repeats: int, warmup: int, engine_dir: str = "") -> list[Row]:
    """Every (backend, dtype), then every (H, W) size and step count; the baseline first (its outputs are
    the quality reference). Each backend is built once (shape range = the largest size) and freed after.

    A backend that does not start, or falls back, gives "unavailable" rows and a run that raises a
    "failed" row; one that falls back to torch on a frame gives a "failed" row and is not measured further
    (torch ran in its place); none of these stops the sweep.
    """
    frames = {size: camera_frame(*size) for size in sizes}
    options = BackendOptions(engine_file_path=engine_dir, max_height=max(h for h, _ in sizes),
                             max_width=max(w for _, w in sizes))
    configs = [BASELINE] + [(b, d) for b in backends for d in dtypes if (b, d) != BASELINE]
    reference: dict[tuple, tuple[float, np.ndarray]] = {}  # (H, W, steps) -> (baseline total, depth)
    rows = []
    for name, dtype in configs:
        try:
            backend, fallback = create_backend(name, dit, encoder, device, dtype, options)
            status = f"unavailable: {_fallback_reason(name, fallback)}" if fallback else "ok"
        except Exception as error:  # a backend whose module or package is missing is reported, not fatal
            backend, status = None, f"unavailable: {error_summary(error, first_line=True)}"
        for height, width in sizes:
            if status != "ok":
                rows.append(Row(name, dtype, height, width, None, status))
                continue
            frame = frames[height, width]
            for n in steps:
                row = Row(name, dtype, height, width, n)
                rows.append(row)
                try:
                    stage_ms, row.peak_mib, depth = measure(partial(run_stages, backend, frame, device=device), n,
                                                            device, repeats, warmup)
                except Exception as error:
                    row.status = f"failed: {error_summary(error, first_line=True)}"
                    continue
                if getattr(backend, "fallback", ""):  # it failed on a frame and torch ran instead: not its row
                    row.status = status = f"failed: {backend.fallback}"
                    break
                fill_row(row, stage_ms, depth, reference, dit, encoder, peaks[dtype])
        del backend
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
