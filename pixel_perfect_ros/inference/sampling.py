"""The official sampling loop of the flow-matching DiTs and its inputs: precision names, seeded noise.

Shared by the image and video pipelines and by every backend (no dependency on either).
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.flow import euler_step, next_timesteps, sampling_timesteps

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
    timestep_tensors: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The official sampling loop: Euler steps of the DiT from ``noise`` to a depth map.

    Args:
        dit: the PPD ``DiT`` (or the video DiT, the frames as the batch).
        image: (N, 3, H, W) RGB in [0, 1] at the processing size.
        semantics: (N, (H/16)*(W/16), D) semantic tokens of ``image``.
        noise: (N, 1, H, W) float32 initial latent ``x_T``.
        timesteps: descending timesteps (``sampling_timesteps``).
        timestep_tensors: optional 0-d int32 tensors of ``timesteps`` on the latent's device, made
            beforehand: the loop then makes no host-to-device copy (needed inside a CUDA graph capture).

    Returns:
        (N, 1, H, W) float32 normalised log-depth (the ``x_0`` latent + 0.5).
    """
    cond = image - 0.5
    latent = noise.float()
    if timestep_tensors is None:
        timestep_tensors = [torch.tensor(t, dtype=torch.int32, device=latent.device) for t in timesteps]
    for t, t_next, t_tensor in zip(timesteps, next_timesteps(timesteps), timestep_tensors, strict=True):
        velocity = dit(torch.cat([latent, cond], dim=1), semantics, t_tensor)
        latent = euler_step(velocity, latent, t, t_next)
    return latent + 0.5
