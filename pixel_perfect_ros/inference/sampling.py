"""The official sampling loop of the flow-matching DiTs and its inputs: precision names, seeded noise,
and the per-call inputs kept on the device (timestep tensors, seeded noise) so a frame makes no
host-to-device copy for them.

Shared by the image and video pipelines and by every backend (no dependency on either).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from ..model.flow import euler_step, next_timesteps, sampling_timesteps
from ..model.tensor_cache import TensorCache

TIMESTEP_SEQUENCES_KEPT = 8
"""(timesteps, device) pairs whose tensors ``device_timesteps`` keeps (a few bytes each)."""
NOISE_SHAPES_KEPT = 4
"""(shape, seed, device) latents a ``DeviceNoise`` keeps by default (4 bytes per element each)."""

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
"""Precision names -> autocast dtype (None: plain float32)."""


def check_dtype(dtype: str) -> None:
    """ValueError naming the choices when ``dtype`` is not a key of ``DTYPES``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def autocast(device: torch.device, dtype: str) -> torch.autocast:
    """Autocast to precision ``dtype`` on ``device``'s type (disabled for fp32)."""
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def seeded_noise(shape: tuple[int, ...], seed: int | None) -> torch.Tensor:
    """Standard normal float32 CPU noise from a ``torch.Generator`` of its own seeded with ``seed``
    (None: fresh entropy), so the global RNG state never matters."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return torch.randn(*shape, generator=generator)


class DeviceNoise:
    """Initial latents ``x_T`` on the device: ``seeded_noise`` drawn once per (shape, seed, device).

    With a fixed seed every call returns the same device tensor, bit-identical to
    ``seeded_noise(shape, seed).to(device)`` (drawn exactly so, once); with seed None each call draws
    fresh noise. The cached tensors are shared: callers must never write into them (``sample_depth``,
    ``flow.euler_step`` and the backends' copies into static buffers only read them).

    Args:
        capacity: (shape, seed, device) latents kept, least recently used dropped first.
    """

    def __init__(self, capacity: int = NOISE_SHAPES_KEPT):
        self._cache: TensorCache[torch.Tensor] = TensorCache(capacity)

    @property
    def capacity(self) -> int:
        """Latents kept."""
        return self._cache.capacity

    def __call__(self, shape: Sequence[int], seed: int | None, device: torch.device | str) -> torch.Tensor:
        """(shape) float32 standard normal noise on ``device``; read-only when ``seed`` is not None."""
        device = torch.device(device)
        shape = tuple(shape)
        if seed is None:
            return seeded_noise(shape, None).to(device)
        return self._cache.get((shape, seed, device), lambda: seeded_noise(shape, seed).to(device), device)


def device_timesteps(timesteps: Sequence[int], device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """0-d int32 tensors of ``timesteps`` on ``device``, made once per (timesteps, device) and shared.

    Read-only: the DiTs only read the timestep (``timestep_embedding`` casts it to float32). Made
    outside inference mode, so they can be used anywhere. A CUDA graph that reads them must keep a
    reference to the returned tuple (the cache keeps only the ``TIMESTEP_SEQUENCES_KEPT`` most recent).
    """
    return _device_timesteps(tuple(timesteps), torch.device(device))


@functools.lru_cache(maxsize=TIMESTEP_SEQUENCES_KEPT)
def _device_timesteps(timesteps: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """The cached body of ``device_timesteps`` (hashable arguments)."""
    with torch.inference_mode(False):
        return tuple(torch.tensor(t, dtype=torch.int32, device=device) for t in timesteps)


class EulerSteps:
    """A pipeline's ``steps`` (Euler steps; may be changed between calls) and the official ``timesteps``
    they give (``flow.sampling_timesteps``, which refuses steps < 1)."""

    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, steps: int) -> None:
        self.timesteps = sampling_timesteps(steps)
        self._steps = steps


def sample_depth(
    dit: nn.Module, image: torch.Tensor, semantics: torch.Tensor, noise: torch.Tensor, timesteps: list[int],
    timestep_tensors: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The official sampling loop: Euler steps of the DiT from ``noise`` to a depth map.

    Args:
        dit: the PPD ``DiT`` (or the video DiT, the frames as the batch).
        image: (N, 3, H, W) RGB in [0, 1] at the processing size.
        semantics: (N, (H/16)*(W/16), D) semantic tokens of ``image``.
        noise: (N, 1, H, W) float32 initial latent ``x_T``.
        timesteps: descending timesteps (``sampling_timesteps``).
        timestep_tensors: optional 0-d int32 tensors of ``timesteps`` on the latent's device, made
            beforehand (needed inside a CUDA graph capture); default ``device_timesteps``, made once.

    Returns:
        (N, 1, H, W) float32 normalised log-depth (the ``x_0`` latent + 0.5).

    ``noise`` is never written (``latent`` is rebound by each step, never updated in place), so it may
    be a shared ``DeviceNoise`` tensor.
    """
    cond = image - 0.5
    latent = noise.float()
    if timestep_tensors is None:
        timestep_tensors = device_timesteps(timesteps, latent.device)
    for t, t_next, t_tensor in zip(timesteps, next_timesteps(timesteps), timestep_tensors, strict=True):
        velocity = dit(torch.cat([latent, cond], dim=1), semantics, t_tensor)
        latent = euler_step(velocity, latent, t, t_next)
    return latent + 0.5
