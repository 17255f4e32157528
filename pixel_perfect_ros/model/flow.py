"""Flow-matching schedule and Euler sampler of PPD / PPVD (plain math, no nn.Module).

Linear (rectified-flow) path with horizon ``T = 1000``::

    x_t = (1 - t/T) * x_0 + (t/T) * x_T,     x_T ~ N(0, I),  x_0 = data (normalised log-depth - 0.5)

The DiT predicts the velocity ``v = x_T - x_0``. Sampling walks the descending integer timesteps of
``sampling_timesteps`` and after the last one lands on the ``x_0`` prediction.
"""
from __future__ import annotations

import torch

T = 1000
"""Diffusion horizon: timesteps are integers in [0, T] (plus the -1 quirk, see sampling_timesteps)."""


def sampling_timesteps(steps: int) -> list[int]:
    """Official descending timestep sequence for ``steps`` Euler steps.

    ``round(arange(T, -1, -(T+1)/steps))`` in float32, exactly as the official code. For 71 step
    counts in 1..1000 (29, 49, 58, 59, 98, ...) the float32 ``arange`` yields one extra element near
    -1, so the sequence has ``steps + 1`` entries and ends with ``-1``; the sampler then evaluates the
    DiT once more at ``t = -1``. Kept for parity; the defaults (4, 10, 20) are unaffected.

    Raises:
        ValueError: if ``steps`` is not a positive integer.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    grid = torch.arange(T, -1, -(T + 1) / steps, dtype=torch.float32)
    return grid.round().int().tolist()


def next_timesteps(timesteps: list[int]) -> list[int]:
    """The step target of each timestep: the following entry, and the sentinel -1 after the last."""
    return list(timesteps[1:]) + [-1]


def euler_step(velocity: torch.Tensor, sample: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
    """One Euler step of the flow ODE from timestep ``t`` to ``t_next``.

    Computed as the official sampler does (through the ``x_0`` and ``x_T`` predictions), in float32
    whatever the velocity dtype (the DiT may run under fp16/bf16 autocast):
    ``x_0 = x_t - (t/T) v``, ``x_T = x_t + (1 - t/T) v``, ``x_s = (1 - s/T) x_0 + (s/T) x_T``; a
    negative ``t_next`` returns ``x_0``.

    Args:
        velocity: (N, C, H, W) DiT output, ``x_T - x_0``.
        sample: (N, C, H, W) float32 current latent ``x_t``.
        t: current timestep (integer, may be -1 for the quirky extra step).
        t_next: next timestep, -1 after the last one.

    Returns:
        (N, C, H, W) float32 latent at ``t_next``.
    """
    velocity = velocity.float()
    sample = sample.float()
    t_frac = _fraction(t)
    x0 = sample - t_frac * velocity
    if t_next < 0:
        return x0
    xT = sample + (1 - t_frac) * velocity
    s_frac = _fraction(min(t_next, T))
    return (1 - s_frac) * x0 + s_frac * xT


def _fraction(t: int) -> torch.Tensor:
    """``t / T`` as a float32 division, as the official sampler (tensor timesteps) computes it."""
    return torch.tensor(t, dtype=torch.float32) / T
