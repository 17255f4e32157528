"""Pixel-Perfect Video Depth: a clip of RGB uint8 frames in, aligned normalised log-depth out (PPD_SPEC 3.1).

The official ``infer_video``: every frame at the DiT's square input size, 16-frame windows
(``video_windows.window_slots``), one initial noise shared by all windows, Pi3 semantics per window, the
Euler loop of ``sample_depth``, each window resized back to the input resolution, then the least-squares
chaining of ``align_video_depth``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..model.dit_video import VideoDiT
from ..model.pi3 import Pi3Semantics
from .checkpoints import load_pi3_semantics, load_ppvd_dit
from .sampling import EulerSteps, autocast, check_dtype, sample_depth, seeded_noise
from .timing import StageTimer
from .video_windows import (WINDOW, align_video_depth, to_network_input, window_depth_to_original,
                            window_slots)


@dataclass
class VideoPrediction:
    """One PPVD prediction.

    Attributes:
        depth: (L, H0, W0) float32 normalised log-depth at the input resolution, every window brought onto
            window 0's scale (larger = farther, not clamped).
        timings_ms: wall time per stage in milliseconds (preprocess, semantics and sampling summed over
            windows, postprocess).
    """

    depth: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


def initial_noise(size: int, seed: int | None) -> torch.Tensor:
    """The video's one initial latent ``x_T``: (16, 1, size, size) float32 on the CPU (``seeded_noise``)."""
    return seeded_noise((WINDOW, 1, size, size), seed)


class PixelPerfectVideoDepth(EulerSteps):
    """PPVD inference on video clips.

    Args:
        dit: the PPVD ``VideoDiT``; its ``input_size`` is the network resolution (512 official).
        semantics: Pi3 encoder + decoder giving (F, h*w, 2048) tokens.
        steps: Euler steps (official default 4); may be changed between calls (a stream then runs a new
            reference pass).
        seed: initial-noise seed (same clip -> same depth); None draws fresh noise each call.
        device: torch device, e.g. "cpu", "cuda:0". Never silently changed.
        dtype: "fp32", "fp16" or "bf16" (autocast; the latent stays float32).
        bgr_quirk: feed B,G,R channel order as the official pipeline does (keep True for official weights).

    Raises:
        ValueError: for an unknown ``dtype`` or a Pi3 whose token width is not the DiT's ``semantics_dim``.
    """

    def __init__(self, dit: VideoDiT, semantics: Pi3Semantics, steps: int = 4, seed: int | None = 0,
                 device: str | torch.device = "cpu", dtype: str = "fp32", bgr_quirk: bool = True):
        check_dtype(dtype)
        if semantics.out_dim != dit.semantics_dim:
            raise ValueError(f"the Pi3 encoder gives {semantics.out_dim}-d tokens; the video DiT takes "
                             f"{dit.semantics_dim}-d ones (official: 2048, Pi3 with a 1024-wide decoder)")
        self.steps = steps
        self.seed = seed
        self.device = torch.device(device)
        self.dtype = dtype
        self.bgr_quirk = bgr_quirk
        self.dit = dit.eval().requires_grad_(False).to(self.device)
        self.semantics = semantics.eval().requires_grad_(False).to(self.device)

    @classmethod
    def from_checkpoints(cls, ppvd_path: str | Path, pi3_path: str | Path, **kwargs) -> "PixelPerfectVideoDepth":
        """Build from the official ``ppvd.pth`` and Pi3 ``model.safetensors``; other keyword arguments go
        to the constructor. Raises ``CheckpointError`` for missing or wrong files."""
        return cls(load_ppvd_dit(ppvd_path), load_pi3_semantics(pi3_path), **kwargs)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray, progress: Callable[[int, int], None] | None = None) -> VideoPrediction:
        """Predict aligned normalised log-depth for a clip.

        Args:
            frames: (L, H0, W0, 3) uint8 RGB, L >= 1 (short clips are padded to one window).
            progress: called as ``progress(done_windows, total_windows)`` after every window.

        Raises:
            ValueError: if ``frames`` is not a non-empty (L, H0, W0, 3) uint8 array.
        """
        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 \
                or frames.dtype != np.uint8 or len(frames) == 0:
            desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise ValueError(f"expected video frames as a non-empty (L, H, W, 3) uint8 array, got {desc}")
        timer = StageTimer(self.device, ("preprocess", "semantics", "sampling", "postprocess"))
        # 1. Network input (L, 3, S, S), window slot lists and the one shared initial noise (16, 1, S, S).
        num_frames, height0, width0 = frames.shape[:3]
        x = to_network_input(frames, self.bgr_quirk, self.dit.input_size).to(self.device)
        windows = window_slots(num_frames)
        noise = initial_noise(self.dit.input_size, self.seed).to(self.device)
        timer.lap("preprocess")
        predictions = []
        for k, slots in enumerate(windows):
            window = x[slots]  # (16, 3, S, S)
            with autocast(self.device, self.dtype):
                # 2. Pi3 semantics of the window's 16 frames together: (16, (S/16)^2, 2048).
                semantics = self.semantics.forward_semantics(window)
                timer.lap("semantics")
                # 3. Euler steps of the video DiT, the 16 frames as one batch: (16, 1, S, S).
                depth = sample_depth(self.dit, window, semantics, noise, self.timesteps)
                timer.lap("sampling")
            # 4. Back to the input resolution: (16, H0, W0).
            predictions.append(window_depth_to_original(depth, height0, width0))
            timer.lap("postprocess")
            if progress is not None:
                progress(k + 1, len(windows))
        # 5. Chain the windows onto window 0's scale and drop the padding frames.
        depth = align_video_depth(predictions)[:num_frames]
        timer.lap("postprocess")
        return VideoPrediction(depth=depth, timings_ms=timer.ms)
