"""Single-image Pixel-Perfect Depth: RGB uint8 in, normalised log-depth out (PPD_SPEC 1).

``sample_depth`` is the official ``forward_test`` loop on tensors; ``PixelPerfectDepth`` wraps it with
pre/post-processing, device, precision and seeding.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.dit import SEMANTICS_DIM
from ..model.flow import euler_step, next_timesteps, sampling_timesteps
from .checkpoints import load_ppd_dit, load_semantics_encoder
from .preprocess import DEFAULT_TARGET_AREA, image_to_tensor, resize_depth, resize_to_processing

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
"""Precision names -> autocast dtype (None: plain float32)."""


@dataclass
class DepthPrediction:
    """One PPD prediction.

    Attributes:
        depth: (H0, W0) float32 normalised log-depth at the input resolution: an affine-invariant map
            of log(1 + depth), about 0 at the 2nd and 1 at the 98th percentile of the scene (larger =
            farther), not clamped. Bilinear resize of ``processing_depth``.
        processing_depth: (H, W) float32, the same at the network's processing size.
        timings_ms: wall time per stage in milliseconds (preprocess, semantics, sampling, postprocess).
    """

    depth: np.ndarray
    processing_depth: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


def sample_depth(
    dit: nn.Module, image: torch.Tensor, semantics: torch.Tensor, noise: torch.Tensor, timesteps: list[int]
) -> torch.Tensor:
    """The official sampling loop: Euler steps of the DiT from ``noise`` to a depth map.

    Args:
        dit: the PPD ``DiT``.
        image: (N, 3, H, W) RGB in [0, 1] at the processing size.
        semantics: (N, (H/16)*(W/16), 1024) semantic tokens of ``image``.
        noise: (N, 1, H, W) float32 initial latent ``x_T``.
        timesteps: descending timesteps (``sampling_timesteps``).

    Returns:
        (N, 1, H, W) float32 normalised log-depth (the ``x_0`` latent + 0.5).
    """
    cond = image - 0.5
    latent = noise.float()
    for t, t_next in zip(timesteps, next_timesteps(timesteps)):
        t_tensor = torch.tensor(t, dtype=torch.int32, device=latent.device)
        velocity = dit(torch.cat([latent, cond], dim=1), semantics, t_tensor)
        latent = euler_step(velocity, latent, t, t_next)
    return latent + 0.5


class PixelPerfectDepth:
    """PPD inference on single RGB images.

    Args:
        dit: the PPD ``DiT`` (SP-DiT + Cas-DiT).
        semantics_encoder: module with ``forward_semantics((N,3,H,W) RGB [0,1]) -> (N, h*w, 1024)``.
        steps: Euler steps (official default 4).
        target_area: processing area in pixels (official 1024*768).
        device: torch device, e.g. "cpu", "cuda", "cuda:1". Never silently changed.
        dtype: "fp32", "fp16" or "bf16" (autocast; the latent stays float32).
        seed: initial-noise seed. With a seed, every call draws the same noise from its own
            ``torch.Generator`` (same image -> same depth, independent of global RNG state); None draws
            fresh noise each call.
    """

    def __init__(
        self,
        dit: nn.Module,
        semantics_encoder: nn.Module,
        steps: int = 4,
        target_area: int = DEFAULT_TARGET_AREA,
        device: str | torch.device = "cpu",
        dtype: str = "fp32",
        seed: int | None = 0,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if semantics_encoder.out_dim != SEMANTICS_DIM:
            raise ValueError(
                f"the semantics encoder gives {semantics_encoder.out_dim}-d tokens; the PPD DiT takes "
                f"{SEMANTICS_DIM}-d ones (Depth Anything v2 ViT-L or MoGe-2 with dim_out {SEMANTICS_DIM})"
            )
        self.steps = steps
        self.target_area = target_area
        self.device = torch.device(device)
        self.dtype = dtype
        self.seed = seed
        self.dit = dit.eval().requires_grad_(False).to(self.device)
        self.semantics_encoder = semantics_encoder.eval().requires_grad_(False).to(self.device)

    @property
    def steps(self) -> int:
        """Euler steps; may be changed between calls."""
        return self._steps

    @steps.setter
    def steps(self, steps: int) -> None:
        self.timesteps = sampling_timesteps(steps)
        self._steps = steps

    @classmethod
    def from_checkpoints(
        cls, checkpoint: str | Path, semantics: str | Path, semantics_type: str = "da2", **kwargs
    ) -> "PixelPerfectDepth":
        """Build from the official files: ``ppd.pth`` / ``ppd_moge.pth`` and the semantics checkpoint
        (``depth_anything_v2_vitl.pth`` for "da2", MoGe-2 ``model.pt`` for "moge2"). Other keyword
        arguments go to the constructor. Raises ``CheckpointError`` for missing or wrong files."""
        return cls(load_ppd_dit(checkpoint), load_semantics_encoder(semantics, semantics_type), **kwargs)

    def _noise(self, height: int, width: int) -> torch.Tensor:
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return torch.randn(1, 1, height, width, generator=generator).to(self.device)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> DepthPrediction:
        """Predict normalised log-depth for one (H0, W0, 3) uint8 RGB image."""
        timings, clock = {}, time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            timings[stage] = (now - clock) * 1e3
            clock = now

        # 1. Resize to the processing size and convert: (1, 3, H, W) RGB in [0, 1].
        x = image_to_tensor(resize_to_processing(image, self.target_area)).to(self.device)
        height0, width0 = image.shape[:2]
        noise = self._noise(*x.shape[-2:])
        lap("preprocess")
        autocast = torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=self.dtype != "fp32")
        with autocast:
            # 2. Semantic tokens, once per image: (1, h*w, 1024).
            semantics = self.semantics_encoder.forward_semantics(x)
            lap("semantics")
            # 3. Euler steps of the DiT: (1, 1, H, W).
            depth = sample_depth(self.dit, x, semantics, noise, self.timesteps)
            lap("sampling")
        # 4. Back to the input resolution.
        full = resize_depth(depth, height0, width0)
        prediction = DepthPrediction(
            depth=full[0, 0].float().cpu().numpy(), processing_depth=depth[0, 0].float().cpu().numpy()
        )
        lap("postprocess")
        prediction.timings_ms = timings
        return prediction
