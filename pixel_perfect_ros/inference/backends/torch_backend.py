"""``torch``: the model's own modules, eager, under autocast for fp16 / bf16.

Attention is ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA); autocast
keeps LayerNorm and softmax statistics in float32, and the latent and Euler updates stay float32.
"""
from __future__ import annotations

import torch

from ..sampling import autocast, sample_depth
from .base import Backend


class TorchBackend(Backend):
    """Eager PyTorch (see the module docstring)."""

    name = "torch"

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self.encoder.forward_semantics(image)

    def sample(self, image, semantics, noise, timesteps):
        with autocast(self.device, self.dtype):
            return sample_depth(self.dit, image, semantics, noise, timesteps).float()
