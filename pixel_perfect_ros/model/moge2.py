"""MoGe-2 (v2) as shipped with Pixel-Perfect Depth: encoder, neck, heads and scale head (MOGE2_SPEC 1-3).

The attribute names reproduce the official state-dict keys of MoGe-2's ``model.pt``::

    encoder.*                      DINOv2 encoder (semantics.MoGe2Encoder: backbone, output_projections)
    neck.*                         ConvStack on [features + uv, uv, uv, uv, uv]
    points_head.* normal_head.* mask_head.*   ConvStacks on the neck's per-level outputs (optional)
    scale_head.{0,2,4,...}.*       MLP on the CLS token (optional)

Inside a ConvStack: ``input_blocks.l``, ``res_blocks.l.j.layers.{2,5}`` (norm layers at 0 / 3,
``skip_connection`` when widths differ), ``resamplers.l.{0,1}`` and ``output_blocks.l``.

:meth:`MoGe2Model.forward` returns the raw network outputs (affine point map, unit normals, mask
probability, metric scale); recovering focal length, shift and metric depth is in
``pixel_perfect_ros.inference.moge2``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixel_perfect_ros.model.semantics import MoGe2Encoder

REMAP_OUTPUTS = ("linear", "sinh", "exp", "sinh_exp")
"""How the three raw point channels are mapped to the affine point map (``remap_output``)."""

RESAMPLERS = ("conv_transpose", "bilinear", "nearest", "pixel_shuffle")
"""Implemented x2 up-samplers. The official down-samplers (pixel_unshuffle, avg_pool, max_pool) cannot
be used by MoGe-2, whose levels double in size, and are rejected."""

NORMS = ("group_norm", "layer_norm", "instance_norm", "none")
ACTIVATIONS = ("relu", "leaky_relu", "silu", "elu")

MAX_LEVELS = 5
"""Levels fed by the official forward (the UV loop is fixed at 5; a longer neck would fail upstream)."""

UV_CHANNELS = 2
"""Channels of the view-plane UV map appended to every neck level (u, then v)."""

HEAD_CHANNELS = {"points_head": 3, "normal_head": 3, "mask_head": 1}
"""Output channels each head's last level must have (the remap / normalise / sigmoid assume them)."""


def uv_map(
    width: int,
    height: int,
    aspect: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """View-plane UV coordinates of the pixel centres of an image whose half-diagonal is 1 (spec 2.6).

    Args:
        width: pixels per row.
        height: pixel rows.
        aspect: width / height of the image the map stands for; defaults to ``width / height``.
            MoGe-2 passes the input image's aspect for every level, not the level's own.
        dtype, device: of the result (the end points are formed in Python double, then
            ``torch.linspace`` runs in ``dtype``, as upstream).

    Returns:
        (height, width, 2): ``[..., 0]`` = u (x right), ``[..., 1]`` = v (y down); 0 at the image centre.
    """
    if width < 1 or height < 1:
        raise ValueError(f"uv map size must be positive, got {width}x{height}")
    if aspect is None:
        aspect = width / height
    span_x = aspect / math.sqrt(1 + aspect**2)
    span_y = 1 / math.sqrt(1 + aspect**2)
    end_x = span_x * (width - 1) / width
    end_y = span_y * (height - 1) / height
    u = torch.linspace(-end_x, end_x, width, dtype=dtype, device=device)
    v = torch.linspace(-end_y, end_y, height, dtype=dtype, device=device)
    u, v = torch.meshgrid(u, v, indexing="xy")  # each (height, width)
    return torch.stack([u, v], dim=-1)


# ---------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution with replicate padding (every 3x3 conv of MoGe-2)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="replicate")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group_norm":  # groups of 32 channels, as upstream
        if channels < 32 or channels % (channels // 32):
            raise ValueError(f"group_norm needs a width divisible into groups of ~32 channels, got {channels}")
        return nn.GroupNorm(channels // 32, channels)
    if kind == "layer_norm":
        return nn.GroupNorm(1, channels)
    if kind == "instance_norm":
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def _activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        return nn.LeakyReLU(negative_slope=0.2)
    if kind == "silu":
        return nn.SiLU()
    if kind == "elu":
        return nn.ELU()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


class ResidualConvBlock(nn.Module):
    """``x + Conv3x3(act(N2(Conv3x3(act(N1(x))))))``; a 1x1 conv skip when the widths differ.

    ``layers`` = [N1, act, conv in->hidden, N2, act, conv hidden->out], so with norm ``'none'`` the
    weights are ``layers.2.*`` and ``layers.5.*`` as in the official file.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        activation: str = "relu",
        in_norm: str = "layer_norm",
        hidden_norm: str = "group_norm",
    ):
        super().__init__()
        self.layers = nn.Sequential(
            _norm(in_norm, in_channels),
            _activation(activation),
            _conv3x3(in_channels, hidden_channels),
            _norm(hidden_norm, hidden_channels),
            _activation(activation),
            _conv3x3(hidden_channels, out_channels),
        )
        self.skip_connection = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in, H, W) -> (N, out, H, W)."""
        return self.layers(x) + self.skip_connection(x)


class Resampler(nn.Sequential):
    """x2 up-sampler ``in_channels -> out_channels`` (spec 2.4; state-dict indices as upstream).

    * ``conv_transpose``: [ConvTranspose2d(k2, s2), Conv3x3]
    * ``bilinear`` / ``nearest``: [Upsample x2 (no weights), Conv3x3 in->out]
    * ``pixel_shuffle``: [Conv3x3 in->4*out, PixelShuffle(2), Conv3x3]
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str):
        if kind == "conv_transpose":
            layers = [nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2),
                      _conv3x3(out_channels, out_channels)]
        elif kind == "bilinear":
            layers = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                      _conv3x3(in_channels, out_channels)]
        elif kind == "nearest":
            layers = [nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(in_channels, out_channels)]
        elif kind == "pixel_shuffle":
            layers = [_conv3x3(in_channels, 4 * out_channels), nn.PixelShuffle(2),
                      _conv3x3(out_channels, out_channels)]
        else:
            raise ValueError(f"resampler must be one of {RESAMPLERS} (MoGe-2 levels double in size), got {kind!r}")
        super().__init__(*layers)
        self.kind = kind
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Official init: every sub-pixel tap starts as a copy of the first (training only)."""
        if self.kind == "conv_transpose":
            self[0].weight.copy_(self[0].weight[:, :, :1, :1].expand_as(self[0].weight))
        elif self.kind == "pixel_shuffle":
            for i in range(1, 4):
                self[0].weight[i::4] = self[0].weight[0::4]
                self[0].bias[i::4] = self[0].bias[0::4]


class ScaleHead(nn.Sequential):
    """MLP ``dims[0] -> ... -> dims[-1]``: Linear, ReLU, ..., Linear (weights at even indices)."""

    def __init__(self, dims: Sequence[int]):
        dims = [int(d) for d in dims]
        if len(dims) < 2 or min(dims) < 1:
            raise ValueError(f"scale_head dims must list at least 2 positive widths, got {dims}")
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-2], dims[-1]))
        super().__init__(*layers)
        self.dims = tuple(dims)


# ---------------------------------------------------------------------------------------------------
# ConvStack
# ---------------------------------------------------------------------------------------------------


def _per_level(name: str, value, levels: int) -> tuple:
    """A scalar (or None) repeated for every level, or a list checked to have ``levels`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ValueError(f"{name} has {len(value)} entries, expected {levels}: {value}")
        return tuple(value)
    return (value,) * levels


@dataclass(frozen=True)
class ConvStackConfig:
    """One neck/head configuration (``model_config['neck']`` etc.), lists expanded to one entry per level.

    Attributes:
        dim_in: input width per level; None = the level input is used as is (identity).
        dim_res_blocks: working width per level; its length is the number of levels L.
        dim_out: output width per level; None = no output projection.
        resamplers: L-1 up-sampler kinds (:data:`RESAMPLERS`).
        num_res_blocks: residual blocks per level.
        res_block_in_norm, res_block_hidden_norm: :data:`NORMS` of each residual block.
        dim_times_res_block_hidden: hidden width of a residual block as a multiple of its width.
        activation: :data:`ACTIVATIONS`.
    """

    dim_in: tuple[int | None, ...]
    dim_res_blocks: tuple[int, ...]
    dim_out: tuple[int | None, ...]
    resamplers: tuple[str, ...]
    num_res_blocks: tuple[int, ...]
    res_block_in_norm: str = "layer_norm"
    res_block_hidden_norm: str = "group_norm"
    dim_times_res_block_hidden: int = 1
    activation: str = "relu"

    @property
    def num_levels(self) -> int:
        return len(self.dim_res_blocks)

    @classmethod
    def from_dict(cls, config: Mapping) -> ConvStackConfig:
        """Parse the official keyword arguments; scalars are repeated for every level (official
        defaults: ``num_res_blocks`` 1, norms ``layer_norm`` / ``group_norm``, hidden x1, ``relu``).

        Raises:
            ValueError: on missing or unknown keys, lists of the wrong length, or unknown kinds.
        """
        required = {"dim_in", "dim_res_blocks", "dim_out", "resamplers"}
        optional = {"num_res_blocks", "res_block_in_norm", "res_block_hidden_norm",
                    "dim_times_res_block_hidden", "activation"}
        missing, unknown = required - set(config), set(config) - required - optional
        if missing or unknown:
            raise ValueError(f"ConvStack config: missing {sorted(missing)}, unknown {sorted(unknown)}")
        widths = config["dim_res_blocks"]
        if not isinstance(widths, (list, tuple)) or not widths or min(int(w) for w in widths) < 1:
            raise ValueError(f"dim_res_blocks must be a non-empty list of positive widths, got {widths!r}")
        levels = len(widths)
        stack = cls(
            dim_in=_per_level("dim_in", config["dim_in"], levels),
            dim_res_blocks=tuple(int(w) for w in widths),
            dim_out=_per_level("dim_out", config["dim_out"], levels),
            resamplers=_per_level("resamplers", config["resamplers"], levels - 1),
            num_res_blocks=tuple(int(n) for n in _per_level("num_res_blocks", config.get("num_res_blocks", 1), levels)),
            **{k: config[k] for k in optional - {"num_res_blocks"} if k in config},
        )
        for kind in stack.resamplers:
            if kind not in RESAMPLERS:
                raise ValueError(f"resampler must be one of {RESAMPLERS}, got {kind!r}")
        for kind in (stack.res_block_in_norm, stack.res_block_hidden_norm):
            if kind not in NORMS:
                raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
        if stack.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {stack.activation!r}")
        return stack


class ConvStack(nn.Module):
    """Multi-level convolutional decoder (neck and heads; spec 2.3).

    Level l: ``x = input_blocks[l](in[l])`` at l = 0, else ``x = resampled x + input_blocks[l](in[l])``
    (when that input is given); then ``res_blocks[l]``; ``out[l] = output_blocks[l](x)``; then
    ``resamplers[l]`` doubles the size for the next level.
    """

    def __init__(self, config: ConvStackConfig):
        super().__init__()
        self.config = config
        widths = config.dim_res_blocks
        hidden = config.dim_times_res_block_hidden
        self.input_blocks = nn.ModuleList(
            nn.Identity() if d_in is None else nn.Conv2d(d_in, width, kernel_size=1)
            for d_in, width in zip(config.dim_in, widths)
        )
        self.resamplers = nn.ModuleList(
            Resampler(w_prev, w_next, kind) for w_prev, w_next, kind in zip(widths[:-1], widths[1:], config.resamplers)
        )
        self.res_blocks = nn.ModuleList(
            nn.Sequential(*(
                ResidualConvBlock(width, width, hidden * width, config.activation,
                                  config.res_block_in_norm, config.res_block_hidden_norm)
                for _ in range(count)
            ))
            for width, count in zip(widths, config.num_res_blocks)
        )
        self.output_blocks = nn.ModuleList(
            nn.Identity() if d_out is None else nn.Conv2d(width, d_out, kernel_size=1)
            for d_out, width in zip(config.dim_out, widths)
        )

    @classmethod
    def from_config(cls, config: Mapping) -> ConvStack:
        """Build from the official keyword arguments (see :meth:`ConvStackConfig.from_dict`)."""
        return cls(ConvStackConfig.from_dict(config))

    @property
    def num_levels(self) -> int:
        return self.config.num_levels

    def output_widths(self) -> tuple[int, ...]:
        """Channels of each level's output."""
        return tuple(w if d is None else d for w, d in zip(self.config.dim_res_blocks, self.config.dim_out))

    def input_widths(self) -> tuple[int, ...]:
        """Channels each level's input must have."""
        return tuple(w if d is None else d for w, d in zip(self.config.dim_res_blocks, self.config.dim_in))

    def forward(self, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """Decode.

        Args:
            inputs: at least L tensors (N, input_widths[l], h * 2^l, w * 2^l); entries after the first
                may be None (nothing added at that level). Extra entries are ignored.

        Returns:
            L tensors (N, output_widths[l], h * 2^l, w * 2^l).
        """
        outputs = []
        x = None
        for level in range(self.num_levels):
            feature = inputs[level]
            if feature is not None:
                feature = self.input_blocks[level](feature)
            if level == 0:
                if feature is None:
                    raise ValueError("the first ConvStack input must be given")
                x = feature
            elif feature is not None:
                x = x + feature
            x = self.res_blocks[level](x)
            outputs.append(self.output_blocks[level](x))
            if level < self.num_levels - 1:
                x = self.resamplers[level](x)  # (N, C_{l+1}, 2H, 2W)
        return outputs


# ---------------------------------------------------------------------------------------------------
# MoGe-2
# ---------------------------------------------------------------------------------------------------

_TOP_LEVEL_KEYS = ("encoder", "neck", "points_head", "mask_head", "normal_head", "scale_head",
                   "remap_output", "num_tokens_range")


class MoGe2Model(nn.Module):
    """MoGe-2: DINOv2 encoder, shared neck, point / normal / mask heads and a metric-scale MLP.

    Args:
        encoder: ``encoder.*``.
        neck: ``neck.*``; level 0 takes ``encoder.dim_out + 2`` channels, the others the 2 UV channels.
        points_head, mask_head, normal_head: ``*_head.*`` or None (absent: that output is omitted).
        scale_head: ``scale_head.*`` (on the backbone's CLS token) or None.
        remap_output: :data:`REMAP_OUTPUTS` (the published model uses ``'exp'``).
        num_tokens_range: token budget ``(lo, hi)`` for resolution levels 0..9.

    Raises:
        ValueError: when the parts do not fit together (widths, level counts, output channels).
    """

    def __init__(
        self,
        encoder: MoGe2Encoder,
        neck: ConvStack,
        points_head: ConvStack | None = None,
        mask_head: ConvStack | None = None,
        normal_head: ConvStack | None = None,
        scale_head: ScaleHead | None = None,
        remap_output: str = "linear",
        num_tokens_range: Sequence[int] = (1200, 3600),
    ):
        super().__init__()
        if remap_output not in REMAP_OUTPUTS:
            raise ValueError(f"remap_output must be one of {REMAP_OUTPUTS}, got {remap_output!r}")
        lo, hi = (int(n) for n in num_tokens_range)
        if not 1 <= lo <= hi:
            raise ValueError(f"num_tokens_range must be 1 <= lo <= hi, got {tuple(num_tokens_range)}")
        if not 1 <= neck.num_levels <= MAX_LEVELS:
            raise ValueError(f"the neck must have 1..{MAX_LEVELS} levels, got {neck.num_levels}")
        expected_in = (encoder.dim_out + UV_CHANNELS,) + (UV_CHANNELS,) * (neck.num_levels - 1)
        if neck.input_widths() != expected_in:
            raise ValueError(f"neck input widths {neck.input_widths()} must be {expected_in} "
                             "(encoder features + u, v at level 0; u, v at the others)")
        heads = {"points_head": points_head, "mask_head": mask_head, "normal_head": normal_head}
        for name, head in heads.items():
            if head is None:
                continue
            if head.input_widths() != neck.output_widths():
                raise ValueError(f"{name} input widths {head.input_widths()} differ from the neck's "
                                 f"output widths {neck.output_widths()}")
            if head.output_widths()[-1] != HEAD_CHANNELS[name]:
                raise ValueError(f"{name} must end with {HEAD_CHANNELS[name]} channels, "
                                 f"got {head.output_widths()[-1]}")
        if scale_head is not None and (scale_head.dims[0] != encoder.backbone.embed_dim or scale_head.dims[-1] != 1):
            raise ValueError(f"scale_head dims {scale_head.dims} must run from the backbone width "
                             f"{encoder.backbone.embed_dim} to 1")

        self.remap_output = remap_output
        self.num_tokens_range = (lo, hi)
        # Registration order as upstream; absent heads stay plain None attributes (no state-dict keys).
        self.encoder = encoder
        self.neck = neck
        self.points_head = points_head
        self.mask_head = mask_head
        self.normal_head = normal_head
        self.scale_head = scale_head

    @classmethod
    def from_config(cls, model_config: Mapping) -> MoGe2Model:
        """Build from the ``model_config`` dict stored in ``model.pt`` (random weights; load next).

        Unknown top-level keys are ignored with a warning, as upstream. Backbones resolve through
        :data:`~pixel_perfect_ros.model.dinov2.DINOV2_ARCHITECTURES`.

        Raises:
            ValueError: for a missing ``encoder`` / ``neck`` or an invalid part.
        """
        missing = {"encoder", "neck"} - set(model_config)
        if missing:
            raise ValueError(f"MoGe-2 model_config lacks {sorted(missing)}")
        unknown = sorted(set(model_config) - set(_TOP_LEVEL_KEYS))
        if unknown:
            warnings.warn(f"MoGe-2 model_config keys ignored: {unknown}", stacklevel=2)

        def stack(name: str) -> ConvStack | None:
            part = model_config.get(name)
            return None if part is None else ConvStack.from_config(part)

        scale = model_config.get("scale_head")
        return cls(
            encoder=MoGe2Encoder.from_config(model_config["encoder"]),
            neck=ConvStack.from_config(model_config["neck"]),
            points_head=stack("points_head"),
            mask_head=stack("mask_head"),
            normal_head=stack("normal_head"),
            scale_head=None if scale is None else ScaleHead(scale["dims"]),
            remap_output=model_config.get("remap_output", "linear"),
            num_tokens_range=model_config.get("num_tokens_range", (1200, 3600)),
        )

    # -- token grid ---------------------------------------------------------------------------------

    @staticmethod
    def token_grid(height: int, width: int, num_tokens: int) -> tuple[int, int]:
        """Token grid ``(rows, cols)`` for an image and a token budget, truncating as PPD's copy does.

        ``rows = int(sqrt(n / a))``, ``cols = int(sqrt(n * a))`` with ``a = width / height`` (official
        MoGe rounds instead; 768x1024 at 3600 tokens: PPD 51x69, MoGe 52x69).

        Raises:
            ValueError: if the budget gives an empty grid.
        """
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        aspect = width / height
        rows, cols = int(math.sqrt(num_tokens / aspect)), int(math.sqrt(num_tokens * aspect))
        if rows < 1 or cols < 1:
            raise ValueError(f"{num_tokens} tokens give an empty {rows}x{cols} grid for a {height}x{width} image")
        return rows, cols

    def num_tokens_for_level(self, resolution_level: int) -> int:
        """Token budget of ``resolution_level`` 0..9 (9 = ``num_tokens_range[1]``)."""
        if not 0 <= resolution_level <= 9:
            raise ValueError(f"resolution_level must be in 0..9, got {resolution_level}")
        lo, hi = self.num_tokens_range
        return int(lo + (resolution_level / 9) * (hi - lo))

    # -- forward ------------------------------------------------------------------------------------

    def forward(self, image: torch.Tensor, num_tokens: int) -> dict[str, torch.Tensor]:
        """Raw network outputs (spec 3).

        Args:
            image: (N, 3, H, W) RGB in [0, 1].
            num_tokens: token budget; the grid is :meth:`token_grid`.

        Returns:
            See :meth:`decode`.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB image, got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        rows, cols = self.token_grid(height, width, num_tokens)
        features, cls_token = self.encoder(image, rows, cols)  # (N, dim_out, rows, cols), (N, D)
        return self.decode(features, cls_token, height, width)

    def neck_inputs(self, features: torch.Tensor, height: int, width: int) -> list[torch.Tensor]:
        """Neck level inputs: ``[features ++ uv_0, uv_1, ...]``, uv_l of size ``(rows*2^l, cols*2^l)``.

        Args:
            features: (N, dim_out, rows, cols) encoder features.
            height, width: output image size; its aspect is used for every level's UV map.

        Returns:
            ``neck.num_levels`` tensors: (N, dim_out + 2, rows, cols), then (N, 2, rows*2^l, cols*2^l).
        """
        n, _, rows, cols = features.shape
        aspect = width / height
        dtype = self.encoder.image_mean.dtype  # the model's (= input image's) dtype, also under autocast
        levels = []
        for level in range(self.neck.num_levels):
            uv = uv_map(cols * 2**level, rows * 2**level, aspect, dtype, features.device)
            uv = uv.permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1)  # (N, 2, h_l, w_l)
            levels.append(torch.cat([features, uv], dim=1) if level == 0 else uv)
        return levels

    def decode(
        self, features: torch.Tensor, cls_token: torch.Tensor, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """Everything after the encoder: neck, heads, resize to the image, activations.

        Split from :meth:`forward` so that one encoder pass can serve both PPD's semantics and MoGe-2.

        Args:
            features: (N, dim_out, rows, cols) encoder features.
            cls_token: (N, D) CLS token of the last listed encoder layer.
            height, width: output size (the input image's); its aspect feeds the UV maps.

        Returns:
            dict with, for the heads present:
            ``points`` (N, H, W, 3) affine point map after the remap (up to focal / shift / scale),
            ``normal`` (N, H, W, 3) unit normals, ``mask`` (N, H, W) validity probability in (0, 1),
            ``metric_scale`` (N,) positive scale to metres.
        """
        if features.ndim != 4 or features.shape[1] != self.encoder.dim_out:
            raise ValueError(f"expected (N, {self.encoder.dim_out}, rows, cols) features, got {tuple(features.shape)}")
        neck_out = self.neck(self.neck_inputs(features, height, width))  # widths dim_res_blocks, x2 per level
        out = {}
        for name, key in (("points_head", "points"), ("normal_head", "normal"), ("mask_head", "mask")):
            head = getattr(self, name)
            if head is not None:
                raw = head(neck_out)[-1]  # (N, C, rows*2^(L-1), cols*2^(L-1))
                out[key] = F.interpolate(raw, (height, width), mode="bilinear", align_corners=False, antialias=False)
        if "points" in out:
            out["points"] = self.remap_points(out["points"].permute(0, 2, 3, 1))  # (N, H, W, 3)
        if "normal" in out:
            out["normal"] = F.normalize(out["normal"].permute(0, 2, 3, 1), dim=-1)  # eps 1e-12
        if "mask" in out:
            out["mask"] = out["mask"].squeeze(1).sigmoid()  # (N, H, W)
        if self.scale_head is not None:
            out["metric_scale"] = self.scale_head(cls_token).squeeze(1).exp()  # (N,)
        # Keep the official key order: points, normal, mask, metric_scale.
        return {k: out[k] for k in ("points", "normal", "mask", "metric_scale") if k in out}

    def remap_points(self, points: torch.Tensor) -> torch.Tensor:
        """Raw (..., 3) point channels -> affine point map according to ``remap_output``."""
        if self.remap_output == "linear":
            return points
        if self.remap_output == "sinh":
            return torch.sinh(points)
        xy, z = points.split([2, 1], dim=-1)
        z = torch.exp(z)
        if self.remap_output == "exp":
            return torch.cat([xy * z, z], dim=-1)  # (x e^z, y e^z, e^z)
        return torch.cat([torch.sinh(xy), z], dim=-1)  # sinh_exp
