"""Semantics encoders of PPD: frozen DINOv2 features on the DiT's 16-px token grid.

Two encoders with the official state-dict names (the DINOv2 backbone itself is in ``dinov2.py``):

* :class:`DepthAnythingV2Semantics`: keys ``pretrained.*``, as in ``depth_anything_v2_vitl.pth``.
  ImageNet-normalise, bicubic resize, last-layer final-LN'ed patch tokens.
* :class:`MoGe2Semantics`: keys ``encoder.*``, as in the ``encoder`` part of MoGe-2's ``model.pt``.
  Antialiased bilinear resize, normalise, sum of 1x1-projected final-LN'ed intermediate layers.

Both map each 16x16 image patch to one 14x14 ViT patch, so the output is ``(N, (H//16)*(W//16), C)``.
PPVD's multi-frame encoder, :class:`~pixel_perfect_ros.model.pi3.Pi3Semantics`, implements the same
interface in ``pi3.py``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixel_perfect_ros.model.dinov2 import DinoVisionTransformer, dinov2_from_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEMANTICS_PATCH_SIZE = 16
"""Pixels per side of one semantics token (the DiT's coarse patch)."""


def semantics_token_grid(x: torch.Tensor) -> tuple[int, int]:
    """Validate a semantics-encoder input and return its token grid ``(H // 16, W // 16)``.

    Raises:
        ValueError: unless ``x`` is a floating (N, 3, H, W) tensor with H, W positive multiples of 16.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) RGB image, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point image in [0, 1], got dtype {x.dtype}")
    height, width = x.shape[-2:]
    p = SEMANTICS_PATCH_SIZE
    if height < p or width < p or height % p or width % p:
        raise ValueError(f"image size {height}x{width} is not a positive multiple of {p}")
    return height // p, width // p


class SemanticsEncoder(nn.Module, ABC):
    """Interface of the frozen semantics encoders: ``forward_semantics`` and ``out_dim``."""

    out_dim: int
    """Width of each output token."""

    @abstractmethod
    def forward_semantics(self, x: torch.Tensor) -> torch.Tensor:
        """Semantic tokens on the 16-px grid.

        Args:
            x: (N, 3, H, W) float32 RGB in [0, 1]; H and W multiples of 16.

        Returns:
            (N, (H//16) * (W//16), out_dim), raster (row-major) order.
        """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_semantics`."""
        return self.forward_semantics(x)


# ---------------------------------------------------------------------------------------------------
# Depth Anything v2
# ---------------------------------------------------------------------------------------------------


class DepthAnythingV2Semantics(SemanticsEncoder):
    """Depth Anything v2 encoder as built by PPD (the DPT head is not built).

    Args:
        backbone: DINOv2 without registers (``dinov2_vitl14`` for the released model); stored as
            ``pretrained`` so the state-dict keys are ``pretrained.*``.
    """

    def __init__(self, backbone: DinoVisionTransformer):
        super().__init__()
        self.pretrained = backbone
        self.out_dim = backbone.embed_dim

    @classmethod
    def from_backbone_name(cls, name: str = "dinov2_vitl14") -> DepthAnythingV2Semantics:
        """Build with a registered DINOv2 backbone (random weights; load ``pretrained.*`` next)."""
        return cls(dinov2_from_name(name))

    def forward_semantics(self, x: torch.Tensor) -> torch.Tensor:
        """See :meth:`SemanticsEncoder.forward_semantics`; returns (N, rows*cols, D)."""
        rows, cols = semantics_token_grid(x)
        p = self.pretrained.patch_size
        # Constants rather than buffers: the official file has only ``pretrained.*`` keys.
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std  # normalise BEFORE resizing (unlike MoGe-2)
        x = F.interpolate(x, size=(rows * p, cols * p), mode="bicubic", align_corners=False)
        return self.pretrained.forward_features(x)  # (N, rows*cols, D)


# ---------------------------------------------------------------------------------------------------
# MoGe-2
# ---------------------------------------------------------------------------------------------------


class MoGe2Encoder(nn.Module):
    """MoGe-2's ``DINOv2Encoder``: summed 1x1 projections of final-LN'ed intermediate DINOv2 layers.

    Args:
        backbone: DINOv2 backbone (``encoder.backbone.*``).
        intermediate_layers: 0-based, strictly increasing block indices, or an int ``n`` for the last n.
        dim_out: width of the projected features.
    """

    def __init__(
        self, backbone: DinoVisionTransformer, intermediate_layers: int | Sequence[int], dim_out: int
    ):
        super().__init__()
        if dim_out < 1:
            raise ValueError(f"dim_out must be positive, got {dim_out}")
        self.backbone = backbone
        self.layer_indices = backbone.resolve_layer_indices(intermediate_layers)
        self.dim_out = dim_out
        self.output_projections = nn.ModuleList(
            nn.Conv2d(backbone.embed_dim, dim_out, kernel_size=1) for _ in self.layer_indices
        )
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def from_config(cls, config: Mapping) -> MoGe2Encoder:
        """Build from MoGe's ``model_config['encoder']`` (``backbone`` name, ``intermediate_layers``,
        ``dim_out``); other keys are ignored, as upstream. Backbones resolve through
        :data:`~pixel_perfect_ros.model.dinov2.DINOV2_ARCHITECTURES`.

        Raises:
            ValueError: for a missing key or an unknown backbone name.
        """
        missing = {"backbone", "intermediate_layers", "dim_out"} - set(config)
        if missing:
            raise ValueError(f"MoGe encoder config lacks {sorted(missing)}: {dict(config)}")
        backbone = dinov2_from_name(config["backbone"])
        return cls(backbone, config["intermediate_layers"], int(config["dim_out"]))

    def forward(self, image: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode an image on a ``rows x cols`` token grid.

        Args:
            image: (N, 3, H, W) float RGB in [0, 1], any size.
            rows: token rows; the image is resized to ``rows * 14`` pixels high.
            cols: token columns; the image is resized to ``cols * 14`` pixels wide.

        Returns:
            features: (N, dim_out, rows, cols).
            cls_token: (N, D) final-LN'ed CLS token of the last listed layer.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB image, got shape {tuple(image.shape)}")
        if rows < 1 or cols < 1:
            raise ValueError(f"token grid must be positive, got {rows}x{cols}")
        p = self.backbone.patch_size
        x = F.interpolate(image, (rows * p, cols * p), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.image_mean) / self.image_std  # normalise AFTER resizing (unlike DA2)
        layers = self.backbone.get_intermediate_layers(x, self.layer_indices)
        projected = [
            proj(tokens.transpose(1, 2).unflatten(2, (rows, cols)))  # (N, D, rows, cols) -> (N, dim_out, ...)
            for proj, (tokens, _) in zip(self.output_projections, layers)
        ]
        features = torch.stack(projected, dim=1).sum(dim=1)  # (N, dim_out, rows, cols)
        return features, layers[-1][1]


class MoGe2Semantics(SemanticsEncoder):
    """MoGe-2 encoder used as PPD's semantics encoder (neck and heads are not needed).

    Args:
        encoder: stored as ``encoder`` so the state-dict keys match MoGe-2's ``model.pt`` ``encoder.*``.
    """

    def __init__(self, encoder: MoGe2Encoder):
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.dim_out

    @classmethod
    def from_config(cls, encoder_config: Mapping) -> MoGe2Semantics:
        """Build from MoGe's ``model_config['encoder']`` (see :meth:`MoGe2Encoder.from_config`)."""
        return cls(MoGe2Encoder.from_config(encoder_config))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Semantic tokens and the raw encoder outputs they come from (for a shared MoGe-2 pass).

        Returns:
            tokens: (N, rows*cols, dim_out), as :meth:`forward_semantics`.
            features: (N, dim_out, rows, cols) and cls: (N, D), as :meth:`MoGe2Encoder.forward`.
        """
        rows, cols = semantics_token_grid(x)
        features, cls = self.encoder(x, rows, cols)
        return features.flatten(2).transpose(1, 2), features, cls

    def forward_semantics(self, x: torch.Tensor) -> torch.Tensor:
        """See :meth:`SemanticsEncoder.forward_semantics`; returns (N, rows*cols, dim_out)."""
        return self.encode(x)[0]
