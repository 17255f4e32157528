"""Losses and timestep sampling of PPD training (PPD_SPEC 6), plus the baseline's regression loss.

All images are (N, 1, H, W) float tensors; masks are (N, 1, H, W) float in {0, 1}.
"""
from __future__ import annotations

import torch

from ..model.flow import T

MASK_EPS = 1e-6
"""Added to the mask count of the velocity loss, as the official code."""


def sample_timesteps(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit-normal training timesteps ``t = round(T * sigmoid(z))``, ``z ~ N(0, 1)``.

    Args:
        n: batch size.
        generator: CPU generator for reproducible draws.

    Returns:
        (n,) int64 in [0, 1000], one per sample.
    """
    z = torch.randn(n, generator=generator)
    return torch.round(T * torch.sigmoid(z)).long()


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 - t/T) x_0 + (t/T) eps`` with ``t`` (N,) per sample; returns (N, C, H, W)."""
    frac = (t.float() / T).view(-1, 1, 1, 1)
    return (1 - frac) * x0 + frac * noise


def predicted_x0(x_t: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x0_hat = x_t - (t/T) v`` with ``t`` (N,) per sample; returns (N, C, H, W)."""
    return x_t - (t.float() / T).view(-1, 1, 1, 1) * velocity


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(mask * (pred - target)^2) / (sum(mask) + 1e-6)``: the official velocity loss."""
    return (mask * (pred - target).square()).sum() / (mask.sum() + MASK_EPS)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(mask * |pred - target|) / (sum(mask) + 1e-6)``."""
    return (mask * (pred - target).abs()).sum() / (mask.sum() + MASK_EPS)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One scale of the gradient-matching loss (MiDaS, batch-based reduction).

    ``diff = mask * (pred - target)``; L1 of its horizontal and vertical finite differences where both
    neighbours are valid, summed over the batch and divided by the number of valid pixels (0 if none).
    """
    diff = mask * (pred - target)
    grad_x = (diff[..., :, 1:] - diff[..., :, :-1]).abs() * (mask[..., :, 1:] * mask[..., :, :-1])
    grad_y = (diff[..., 1:, :] - diff[..., :-1, :]).abs() * (mask[..., 1:, :] * mask[..., :-1, :])
    count = mask.sum()
    total = grad_x.sum() + grad_y.sum()
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.zeros_like(total))


def multi_scale_gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                              scales: int = 4) -> torch.Tensor:
    """Sum of :func:`gradient_loss` over ``scales`` subsamplings with strides 1, 2, 4, ... (PPD_SPEC 6).

    Args:
        pred, target: (N, 1, H, W) float.
        mask: (N, 1, H, W) float in {0, 1}.
        scales: number of scales (official 4).
    """
    total = pred.new_zeros(())
    for scale in range(scales):
        step = 2 ** scale
        total = total + gradient_loss(pred[..., ::step, ::step], target[..., ::step, ::step],
                                      mask[..., ::step, ::step])
    return total
