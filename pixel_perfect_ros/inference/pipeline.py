"""Single-image Pixel-Perfect Depth: RGB uint8 in, normalised log-depth out (PPD_SPEC 1).

``PixelPerfectDepth`` wraps the official ``forward_test`` loop (``sampling.sample_depth``, run by a
backend) with pre/post-processing, device, precision and seeding. With ``samples`` N > 1 it draws N depth
maps of each image from N initial noises (one semantics pass, the Euler loop on a batch of N) and returns
their mean and the samples themselves, whose spread is a per-pixel uncertainty (``geometry.uncertainty``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..model.dit import SEMANTICS_DIM
from ..model.moge2 import MoGe2Model
from ..model.semantics import MoGe2Semantics
from .backends import BackendOptions, create_backend
from .checkpoints import load_moge2_model, load_ppd_dit, load_semantics_encoder
from .moge2 import MoGe2Result
from .moge2 import infer as moge2_infer
from .preprocess import DEFAULT_TARGET_AREA, image_to_device, resize_depth, resize_to_processing
from .sampling import NOISE_SHAPES_KEPT, DeviceNoise, EulerSteps, autocast, check_dtype
from .timing import StageTimer

_LOG = logging.getLogger(__name__)

MAX_SAMPLES = 16
"""Largest ``samples`` (diffusion samples per image): each costs a DiT pass per Euler step."""


def check_samples(samples) -> int:
    """``samples`` when it is an int in [1, ``MAX_SAMPLES``]; else ValueError saying so."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be an integer from 1 to {MAX_SAMPLES}, got {samples!r}")
    return int(samples)


@dataclass
class DepthPrediction:
    """One PPD prediction.

    Attributes:
        depth: (H0, W0) float32 normalised log-depth at the input resolution: an affine-invariant map
            of log(1 + depth), about 0 at the 2nd and 1 at the 98th percentile of the scene (larger =
            farther), not clamped. Bilinear resize of ``processing_depth``. With several samples, the
            mean of the samples' normalised log-depth (see ``processing_depth``).
        processing_depth: (H, W) float32, the same at the network's processing size. With N > 1
            samples, their per-pixel mean in normalised log-depth: the estimate that averages the
            samples' independent errors (their variance falls as 1/N); the median equals it for N = 2 and
            differs only from N >= 3; in depth it is the geometric mean of the samples' 1 + depth.
        timings_ms: wall time per stage in milliseconds (preprocess, semantics, sampling, metric_reference
            when run, postprocess); "sampling" covers all the samples.
        metric_reference: MoGe-2's metric prediction of the same processing-size image (depth in metres,
            +inf outside its mask; intrinsics), when asked for; else None.
        samples: (N, H0, W0) float32 normalised log-depth of each of N > 1 samples at the input
            resolution (bilinear resizes of ``processing_samples``); None for one sample.
        processing_samples: (N, H, W) float32, the same at the processing size; None for one sample.
    """

    depth: np.ndarray
    processing_depth: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)
    metric_reference: MoGe2Result | None = None
    samples: np.ndarray | None = None
    processing_samples: np.ndarray | None = None


class PixelPerfectDepth(EulerSteps):
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
        metric_model: optional MoGe-2 model for a metric reference of each frame. When the semantics
            encoder is this model's own encoder (``MoGe2Semantics(metric_model.encoder)``), one encoder
            pass serves both: MoGe-2 then runs on PPD's token grid (H/16 x W/16: 3072 tokens at
            1024x768, inside MoGe-2's 1200..3600 range) instead of the official 3600 tokens (that
            shared pass always runs in torch).
        backend: what runs the encoder and the sampling loop (``backends.BACKENDS``); one that cannot
            start here falls back to "torch", with the reason in ``backend_fallback``, and so does one
            that fails on a frame later (``backends.fallback``).
        backend_options: settings of the compiled backends (engine folder, shape range, ...).
        log: receives the backend's one-line notes during the run (a rebuild for another input size, a
            fallback to torch); default: this module's logger at WARNING level.
        samples: depth samples per image, 1 to ``MAX_SAMPLES`` (settable between calls). With N > 1,
            one call encodes the image once and runs the Euler loop on a batch of N (in chunks of at
            most ``backend.max_batch``: a compiled backend built for batch 1 gets N calls of batch 1),
            sample i from the noise a one-sample run with seed ``seed + i`` draws (seed None: fresh
            noise for each); the prediction is their mean, with the samples beside it
            (``DepthPrediction``). Cost: N DiT passes per step; the encoder, the resizes and the metric
            reference run once.

    Attributes:
        backend: the ``Backend``; ``backend.name`` is what runs now (it becomes "torch" after a fallback).
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
        metric_model: MoGe2Model | None = None,
        backend: str = "torch",
        backend_options: BackendOptions = BackendOptions(),
        log: Callable[[str], None] | None = None,
        samples: int = 1,
    ):
        check_dtype(dtype)
        self.samples = samples
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
        self.metric_model = None if metric_model is None else metric_model.eval().requires_grad_(False).to(self.device)
        self.shared_encoder = metric_model is not None and getattr(semantics_encoder, "encoder", None) is metric_model.encoder
        self.backend, self._startup_fallback = create_backend(backend, self.dit, self.semantics_encoder,
                                                              self.device, dtype, backend_options, log or _LOG.warning)

    @property
    def samples(self) -> int:
        """Depth samples per image (1 to ``MAX_SAMPLES``; ValueError otherwise), settable between calls."""
        return self._samples

    @samples.setter
    def samples(self, samples: int) -> None:
        samples = check_samples(samples)
        # A fixed seed's noise is drawn once per (size, seed) and kept on the device: room for the N
        # seeds of one size (or NOISE_SHAPES_KEPT sizes of one sample, as before).
        capacity = max(NOISE_SHAPES_KEPT, samples)
        if getattr(self, "_device_noise", None) is None or self._device_noise.capacity != capacity:
            self._device_noise = DeviceNoise(capacity)
        self._samples = samples

    @property
    def backend_fallback(self) -> str:
        """'' or why the requested backend is not the one running as asked (log it): it did not start,
        it failed on a frame (torch runs since), or it runs in a reduced form (its ``degraded`` note)."""
        return self._startup_fallback or self.backend.fallback or self.backend.degraded

    @classmethod
    def from_checkpoints(
        cls, checkpoint: str | Path, semantics: str | Path, semantics_type: str = "da2",
        metric_checkpoint: str | Path | None = None, **kwargs
    ) -> "PixelPerfectDepth":
        """Build from the official files: ``ppd.pth`` / ``ppd_moge.pth`` and the semantics checkpoint
        (``depth_anything_v2_vitl.pth`` for "da2", MoGe-2 ``model.pt`` for "moge2"), and optionally a
        MoGe-2 ``model.pt`` for metric references (the same file as ``semantics`` shares the encoder).
        Other keyword arguments go to the constructor. Raises ``CheckpointError`` for missing or wrong
        files."""
        metric_model = None if metric_checkpoint is None else load_moge2_model(metric_checkpoint)
        if metric_model is not None and semantics_type == "moge2" and Path(semantics).resolve() == Path(
                metric_checkpoint).resolve():
            encoder = MoGe2Semantics(metric_model.encoder)
        else:
            encoder = load_semantics_encoder(semantics, semantics_type)
        return cls(load_ppd_dit(checkpoint), encoder, metric_model=metric_model, **kwargs)

    def _noise(self, height: int, width: int, count: int = 1) -> torch.Tensor:
        """(count, 1, height, width) initial latents: slice i is what a one-sample run with seed
        ``seed + i`` draws (each kept on the device per seed), fresh noise each when seed is None."""
        if count == 1:
            return self._device_noise((1, 1, height, width), self.seed, self.device)
        return torch.cat([self._device_noise((1, 1, height, width), None if self.seed is None else self.seed + i,
                                             self.device) for i in range(count)])

    def _sample(self, x: torch.Tensor, semantics: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The Euler loop for one image ``x`` (1, 3, H, W) and its ``semantics`` (1, h*w, D) from each of the
        ``noise`` latents (N, 1, H, W): (N, 1, H, W), run in chunks of at most ``backend.max_batch``."""
        count = len(noise)
        if count == 1:
            return self.backend.sample(x, semantics, noise, self.timesteps)
        chunk = min(count, self.backend.max_batch or count)
        # Views, no copies: every backend makes its own dense copy where it needs one (engine buffers,
        # ONNX Runtime inputs, CUDA-graph buffers), and a chunk of 1 is then exactly a one-sample run.
        images = x.expand(chunk, *x.shape[1:])
        tokens = semantics.expand(chunk, *semantics.shape[1:])
        depths = []
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            depths.append(self.backend.sample(images[:size], tokens[:size], noise[start:start + size], self.timesteps))
        return torch.cat(depths)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, metric_reference: bool = False) -> DepthPrediction:
        """Predict normalised log-depth for one (H0, W0, 3) uint8 RGB image; with ``metric_reference``
        also MoGe-2's metric depth of the same processing-size image (needs ``metric_model``). With
        ``samples`` N > 1, the mean of N samples, and the samples (``DepthPrediction``)."""
        if metric_reference and self.metric_model is None:
            raise ValueError("metric_reference needs a metric_model (a MoGe-2 checkpoint)")
        timer = StageTimer(self.device)
        # 1. Resize to the processing size and convert: (1, 3, H, W) RGB in [0, 1].
        x = image_to_device(resize_to_processing(image, self.target_area), self.device)
        height0, width0 = image.shape[:2]
        count = self.samples
        noise = self._noise(*x.shape[-2:], count)
        timer.lap("preprocess")
        # 2. Semantic tokens, once per image: (1, h*w, 1024) (+ MoGe-2's encoder outputs when shared).
        encoder_output = None
        if self.shared_encoder:
            with autocast(self.device, self.dtype):
                semantics, *encoder_output = self.semantics_encoder.encode(x)
        else:
            semantics = self.backend.encode(x)
        timer.lap("semantics")
        # 3. Euler steps of the DiT: (N, 1, H, W) float32, one per sample.
        depth = self._sample(x, semantics, noise)
        timer.lap("sampling")
        # 4. MoGe-2 metric reference of the same image (float32 outputs).
        reference = None
        if metric_reference:
            reference = moge2_infer(self.metric_model, x[0], encoder_output=encoder_output,
                                    use_fp16=self.dtype == "fp16")
            timer.lap("metric_reference")
        # 5. Back to the input resolution (several samples: their mean first, then the samples).
        if count > 1:
            depth = depth.float()
            depth = torch.cat([depth.mean(dim=0, keepdim=True), depth])
        full = resize_depth(depth, height0, width0).float().cpu().numpy()
        depth = depth.float().cpu().numpy()
        prediction = DepthPrediction(
            depth=full[0, 0], processing_depth=depth[0, 0], metric_reference=reference, timings_ms=timer.ms,
            samples=None if count == 1 else full[1:, 0], processing_samples=None if count == 1 else depth[1:, 0],
        )
        timer.lap("postprocess")
        return prediction
