"""Stage 1 of the tiny PPVD: a narrow Pi3 (official key format) trained on clips with a multi-view objective.

The encoder starts from the bundled image model's ViT (``moge2.pt``: 192 wide, ViT/14; Pi3's encoder
is the same DINOv2 code, plus 4 registers and no mask token). The decoder alternates per-frame and
clip-wide blocks as Pi3's. A small head reads the semantics (the last two decoder blocks, 2 x 192 = 384
wide) as 16x16 patches of log-depth, and the loss leaves one free shift per window (one depth scale per
clip): the tokens must agree on geometry across the frames, which is what the video DiT consumes.
Only the encoder and decoder go into ``pi3.safetensors``; the head is for training only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from ..inference.checkpoints import load_moge2_semantics
from ..model.dinov2 import DinoVisionTransformer
from ..model.dit import unpatchify
from ..model.pi3 import Pi3Semantics
from ..model.semantics import SEMANTICS_PATCH_SIZE
from .losses import MASK_EPS
from .targets import valid_depth_mask

PI3_FILE = "pi3.safetensors"
PI3_REGISTERS = 4
"""Encoder registers of Pi3's DINOv2-reg encoder (the decoder's own are ``NUM_SPECIAL_TOKENS``)."""


@dataclass(frozen=True)
class Pi3TrainConfig:
    """Narrow Pi3 and its training.

    decoder_depth / decoder_num_heads / decoder_mlp_ratio: decoder size (official 36, 16, 4); the heads
        must equal the encoder's (3 for the 192-wide ViT: ``pi3_config_from_state_dict`` assumes so for
        an unregistered encoder).
    steps, windows_per_step, max_frames: optimiser steps, windows per step, 4..max_frames frames each.
    validation_windows: fixed held-out windows of the validation number.
    lr / encoder_lr: AdamW rates of the new parts and of the pretrained encoder.
    """

    decoder_depth: int = 4
    decoder_num_heads: int = 3
    decoder_mlp_ratio: float = 2.0
    steps: int = 400
    windows_per_step: int = 1
    max_frames: int = 8
    validation_windows: int = 8
    lr: float = 3e-4
    encoder_lr: float = 1e-4


def pi3_from_moge2(path: str | Path, config: Pi3TrainConfig) -> Pi3Semantics:
    """A Pi3 whose encoder is the MoGe-2 file's ViT (mask token dropped, 4 new registers), new decoder.

    Raises:
        CheckpointError: for a missing or foreign ``path``.
    """
    backbone = load_moge2_semantics(path).encoder.backbone
    encoder = DinoVisionTransformer(
        embed_dim=backbone.embed_dim, depth=backbone.depth, num_heads=backbone.num_heads,
        patch_size=backbone.patch_size, pos_grid=backbone.pos_grid, num_register_tokens=PI3_REGISTERS,
        interpolate_offset=0.0, interpolate_antialias=True, has_mask_token=False)
    weights = {k: v for k, v in backbone.state_dict().items() if k != "mask_token"}
    encoder.load_state_dict({**weights, "register_tokens": encoder.register_tokens.detach()}, strict=True)
    return Pi3Semantics(encoder, config.decoder_depth, config.decoder_num_heads, config.decoder_mlp_ratio)


class MultiViewDepthHead(nn.Module):
    """Linear map of each semantics token to its 16x16 pixels of log-depth (training only)."""

    def __init__(self, semantics_dim: int):
        super().__init__()
        self.linear = nn.Linear(semantics_dim, SEMANTICS_PATCH_SIZE ** 2)

    def forward(self, semantics: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """semantics: (F, rows*cols, semantics_dim) -> (F, 1, 16 rows, 16 cols) log-depth up to a shift."""
        return unpatchify(self.linear(semantics), rows, cols, SEMANTICS_PATCH_SIZE)


class Pi3WithHead(nn.Module):
    """Pi3 + head as one module (one state dict, one optimiser) for stage 1."""

    def __init__(self, pi3: Pi3Semantics):
        super().__init__()
        self.pi3 = pi3
        self.head = MultiViewDepthHead(pi3.out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (F, 3, S, S) [0, 1], one window -> (F, 1, S, S) log-depth up to one shift."""
        rows, cols = images.shape[-2] // SEMANTICS_PATCH_SIZE, images.shape[-1] // SEMANTICS_PATCH_SIZE
        return self.head(self.pi3.forward_semantics(images), rows, cols)


def window_shift_invariant_l1(log_pred: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """Masked L1 of log-depth after removing one mean shift for the whole window (one depth scale per clip).

    Args:
        log_pred: (F, 1, H, W) predicted log-depth. depth_m: (F, H, W) metres, NaN = invalid.
    Returns:
        0-d loss (0 for a window without valid pixels).
    """
    mask = valid_depth_mask(depth_m).unsqueeze(1).float()  # (F, 1, H, W)
    diff = mask * (log_pred - torch.log(torch.nan_to_num(depth_m, nan=1.0).clamp_min(1e-3)).unsqueeze(1))
    shift = diff.sum() / (mask.sum() + MASK_EPS)
    return (mask * (diff - shift).abs()).sum() / (mask.sum() + MASK_EPS)


def parameter_groups(model: Pi3WithHead, config: Pi3TrainConfig) -> list[dict]:
    """AdamW groups: the pretrained encoder (``encoder_lr``), everything else (``lr``)."""
    encoder = [p for n, p in model.named_parameters() if n.startswith("pi3.encoder.")]
    others = [p for n, p in model.named_parameters() if not n.startswith("pi3.encoder.")]
    return [{"params": encoder, "lr": config.encoder_lr}, {"params": others, "lr": config.lr}]


def save_pi3(pi3: Pi3Semantics, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
    """Write the official Pi3 ``model.safetensors`` keys (encoder, decoder, registers, image stats)."""
    state = {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in pi3.state_dict().items()}
    safetensors.torch.save_file(state, str(path))
