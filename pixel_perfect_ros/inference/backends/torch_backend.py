"""``torch``: the model's own modules, eager, under autocast for fp16 / bf16.

Attention is ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA); autocast
keeps LayerNorm and softmax statistics in float32, and the latent and Euler updates stay float32.
"""
from __future__ import annotations

import torch

from ..pipeline import sample_depth
from .base import DTYPES, Backend


class TorchBackend(Backend):
    """Eager PyTorch (see the module docstring)."""

    name = "torch"

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=self.dtype != "fp32")

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.encoder.forward_semantics(image)

    def sample(self, image, semantics, noise, timesteps):
        with self._autocast():
            return sample_depth(self.dit, image, semantics, noise, timesteps).float()
