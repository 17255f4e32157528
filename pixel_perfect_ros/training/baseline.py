"""Tiny discriminative depth baseline (Depth Anything style): ViT encoder + upsampling conv head.

The encoder is a MoGe-2 encoder (:class:`MoGe2Semantics`: DINOv2 ViT-S/14, 1x1 projections of
intermediate layers summed to 1024-d tokens on the 16-px grid). It is trained here with the head, then
frozen and saved as a MoGe-2 ``model.pt`` (``encoder.*`` + ``model_config['encoder']``) to give the
tiny PPD its semantics: the DiT's fusion takes 1024-d tokens (a literal), and MoGe-2 is the official
format that carries a projection to that width, so a small ViT needs no new checkpoint format or loader.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..model.dit import SEMANTICS_DIM
from ..model.semantics import SEMANTICS_PATCH_SIZE, MoGe2Semantics


@dataclass(frozen=True)
class EncoderConfig:
    """MoGe-2 encoder config (saved as ``model_config['encoder']``).

    backbone: registered DINOv2-architecture name (the loaders resolve names in ``DINOV2_ARCHITECTURES``):
        ``ppr_vitt14``, the project's tiny ViT (192 wide, 6 blocks, 2.7M parameters).
    intermediate_layers: 0-based blocks whose final-LN'ed tokens are projected and summed (MoGe-2's
        every-other-block pattern for 6 blocks).
    dim_out: token width; must be the DiT's semantics width.
    """

    backbone: str = "ppr_vitt14"
    intermediate_layers: tuple[int, ...] = (1, 3, 5)
    dim_out: int = SEMANTICS_DIM

    def to_moge2(self) -> dict:
        """As MoGe-2 stores it (lists, not tuples: the file is read with ``weights_only=True``)."""
        config = asdict(self)
        config["intermediate_layers"] = list(self.intermediate_layers)
        return config


@dataclass(frozen=True)
class HeadConfig:
    """Upsampling head: a 1x1 conv to ``channels[0]``, then one x2 stage per further entry.

    log2(16) = 4 stages bring the 16-px token grid to full resolution.
    """

    channels: tuple[int, ...] = (128, 96, 64, 32, 16)


@dataclass(frozen=True)
class BaselineConfig:
    """Architecture of :class:`DepthBaseline`."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)


class DepthHead(nn.Module):
    """Token grid -> full-resolution map: 1x1 conv, then (bilinear x2, conv3x3, ReLU) stages, conv3x3.

    Args:
        in_dim: token width.
        channels: widths; ``len(channels) - 1`` x2 stages must make up the 16-px patch.
    """

    def __init__(self, in_dim: int, channels: tuple[int, ...]):
        super().__init__()
        if 2 ** (len(channels) - 1) != SEMANTICS_PATCH_SIZE:
            raise ValueError(f"{len(channels) - 1} x2 stages do not upsample by {SEMANTICS_PATCH_SIZE}")
        self.project = nn.Conv2d(in_dim, channels[0], kernel_size=1)
        self.stages = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1) for c_in, c_out in zip(channels, channels[1:]))
        self.output = nn.Conv2d(channels[-1], 1, kernel_size=3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (N, C, h, w) -> (N, 1, 16h, 16w)."""
        x = F.relu(self.project(features))
        for conv in self.stages:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.relu(conv(x))  # (N, c_out, 2h', 2w')
        return self.output(x)


class DepthBaseline(nn.Module):
    """ViT encoder + head regressing the normalised log-depth ``n`` (PPD_SPEC 2.1) directly.

    Args:
        config: architecture.
    """

    def __init__(self, config: BaselineConfig = BaselineConfig()):
        super().__init__()
        self.config = config
        self.semantics = MoGe2Semantics.from_config(config.encoder.to_moge2())
        self.head = DepthHead(config.encoder.dim_out, config.head.channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Predict normalised log-depth.

        Args:
            image: (N, 3, H, W) float32 RGB in [0, 1]; H, W multiples of 16.

        Returns:
            (N, 1, H, W) float32, about 0 at the 2nd and 1 at the 98th percentile of log(1 + depth).
        """
        _, features, _ = self.semantics.encode(image)  # (N, 1024, H/16, W/16)
        return self.head(features)
