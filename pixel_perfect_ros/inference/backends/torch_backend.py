"""``torch``: the model's own modules, eager, under autocast for fp16 / bf16.

Attention is ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA); autocast
keeps LayerNorm and softmax statistics in float32, and the latent and Euler updates stay float32.

For fp16 / bf16 the backend runs copies of the DiT and the encoder whose ``nn.Linear`` / ``nn.Conv2d``
weights are stored in that dtype (``cast_for_autocast``): autocast then finds them already cast instead of
casting every weight at every call (it caches casts only of leaf tensors that require grad, which
inference weights do not), which is about 3 GB of memory traffic per DiT step at full size. Same
outputs, bit for bit (autocast's cast of a float32 weight is the stored copy). Memory cost: 2 bytes per
parameter of those layers, on top of the float32 modules that stay for other users: about 1.0 GB for
the full PPD DiT, 0.6 GB for the ViT-L encoder.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..sampling import DTYPES, autocast, sample_depth
from .base import Backend, BackendOptions

AUTOCAST_LAYERS = (nn.Linear, nn.Conv2d)
"""Layers whose forward is one op autocast runs in low precision (``linear``, ``conv2d``) with their own
weight and bias: exactly these types (a subclass may use its weight elsewhere)."""


def cast_for_autocast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A deep copy of ``module`` with the weight and bias of every ``AUTOCAST_LAYERS`` layer in ``dtype``.

    Everything else (LayerNorm weights, LayerScale, position and class tokens, buffers) stays as it is,
    so under ``torch.autocast(dtype=dtype)`` the copy computes exactly what ``module`` computes. Only
    valid under that autocast. The copy shares no tensor with ``module`` and has no parameter requiring
    grad; the cast weights are made directly (no transient full-precision copy of them).

    Args:
        module: the model, on its device, any mode.
        dtype: autocast's low-precision dtype (torch.float16 or torch.bfloat16).
    """
    memo = {}  # deepcopy takes these for the originals
    for layer in module.modules():
        if type(layer) in AUTOCAST_LAYERS:
            for param in layer.parameters(recurse=False):
                memo.setdefault(id(param), nn.Parameter(param.detach().to(dtype, copy=True), requires_grad=False))
    return copy.deepcopy(module, memo).requires_grad_(False)


class TorchBackend(Backend):
    """Eager PyTorch (see the module docstring).

    Attributes:
        sampling_dit: the DiT that ``sample`` runs: ``dit`` for fp32, else its ``cast_for_autocast`` copy.
        encoding_encoder: the encoder that ``encode`` runs, likewise.
    """

    name = "torch"

    def __init__(self, dit: nn.Module, encoder: nn.Module, device: torch.device, dtype: str,
                 options: BackendOptions = BackendOptions()):
        super().__init__(dit, encoder, device, dtype, options)
        low = DTYPES[self.dtype]
        self.sampling_dit = self.dit if low is None else cast_for_autocast(self.dit, low)
        self.encoding_encoder = self.encoder if low is None else cast_for_autocast(self.encoder, low)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self.encoding_encoder.forward_semantics(image)

    def sample(self, image, semantics, noise, timesteps):
        with autocast(self.device, self.dtype):
            return sample_depth(self.sampling_dit, image, semantics, noise, timesteps).float()
