"""Seeded random weights for tests and benchmarks (no checkpoint needed).

The recipe of the official parity fixtures: matrices N / sqrt(fan_in), LayerNorm-like weights 1 + 0.1 N,
other vectors 0.1 N. Unlike the training init (adaLN zeroed) every block then does something, so models
differ measurably and modes that should agree only trivially do not.
"""
from __future__ import annotations

import torch

from .dinov2 import DinoVisionTransformer
from .dit_video import VideoDiT
from .pi3 import Pi3Semantics

TINY_VIDEO_DIT = dict(input_size=64, hidden_size=16, num_heads=2)
"""A 64x64 VideoDiT of width 16 (depth 24: its block indices are fixed)."""


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter of ``module`` in place with seeded random values; returns it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                p.copy_(r / p[0].numel() ** 0.5)
            elif name.endswith("weight") or name.endswith("gamma"):
                p.copy_(1 + 0.1 * r)
            else:
                p.copy_(0.1 * r)
    return module


def tiny_video_models() -> tuple[VideoDiT, Pi3Semantics]:
    """A random ``TINY_VIDEO_DIT`` and a random 1024-wide Pi3 (2048-d tokens, as the video DiT takes) with
    one encoder block and two decoder blocks of MLP ratio 1; eval mode."""
    encoder = DinoVisionTransformer(embed_dim=1024, depth=1, num_heads=16, pos_grid=4, num_register_tokens=4,
                                    interpolate_offset=0.0, interpolate_antialias=True, has_mask_token=False)
    pi3 = Pi3Semantics(encoder, decoder_depth=2, decoder_num_heads=16, mlp_ratio=1.0)
    return randomize_(VideoDiT(**TINY_VIDEO_DIT), seed=4).eval(), randomize_(pi3, seed=5).eval()
