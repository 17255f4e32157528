"""DINOv2 vision transformer (ViT/14) with the official state-dict names.

One implementation serves every DINOv2 user in this package: the Depth Anything v2 and MoGe-2
semantics encoders (no registers, position-embedding offset 0.1) and Pi3 (4 register tokens,
offset 0 with antialiasing, no ``mask_token``).

State-dict keys (``D`` = embed_dim, ``G`` = pos_grid, ``i`` = block index)::

    cls_token (1, 1, D)   pos_embed (1, 1 + G*G, D)   mask_token (1, D) [unused]   register_tokens (1, R, D)
    patch_embed.proj.{weight (D, 3, p, p), bias (D)}
    blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}.*
    norm.{weight, bias}

Token layout inside the blocks: ``[CLS, registers..., patches in raster order]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .tensor_cache import TensorCache, caching_allowed

LAYER_NORM_EPS = 1e-6
"""Epsilon of every LayerNorm in DINOv2 (not PyTorch's default 1e-5)."""
POS_SIZES_KEPT = 4
"""Resized position embeddings a ViT keeps (each (1, 1 + rows*cols, D) float32: 12.6 MB for ViT-L at 64x48)."""


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patches -> tokens in raster (row-major) order."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, rows*p, cols*p) -> (N, rows*cols, D)."""
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, D, rows, cols) -> (N, rows*cols, D)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (rows ``[q; k; v]``, head-major)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, D) -> (N, L, D)."""
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, D/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(D/heads)) v
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """Two-layer feed-forward network with exact (erf) GELU."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual-branch scale ``gamma``."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-LN transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, D) -> (N, L, D)."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------------
# Vision transformer
# ---------------------------------------------------------------------------------------------------


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT backbone (patch embedding, CLS, optional registers, pre-LN blocks, final LN).

    Args:
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads; must divide ``embed_dim``.
        patch_size: patch side in pixels (14 for every published DINOv2).
        pos_grid: side of the learned position-embedding grid (518 // 14 = 37 for DINOv2).
        mlp_ratio: FFN hidden width as a multiple of D.
        num_register_tokens: learned register tokens inserted after CLS (0, or 4 for ``*_reg``).
        interpolate_offset: position-embedding resize rule. Non-zero (0.1, the default) resizes the
            grid with ``scale_factor=((rows + offset)/G, (cols + offset)/G)``, which is not the same
            as resizing to ``size=(rows, cols)``; 0 (the ``*_reg`` models) resizes with ``size=``.
        interpolate_antialias: antialias flag of that bicubic resize (True for ``*_reg`` models).
        has_mask_token: whether the (never used) ``mask_token (1, D)`` parameter exists, as in the
            official DINOv2, DA2 and MoGe-2 checkpoints; Pi3 deletes it.
        ffn_layer: ``"mlp"`` (the only one implemented) or ``"swiglu"`` (ViT-g; NotImplementedError).
        in_chans: image channels.

    Raises:
        ValueError: on inconsistent sizes or an unknown ``ffn_layer``.
        NotImplementedError: for ``ffn_layer="swiglu"``.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 14,
        pos_grid: int = 37,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        has_mask_token: bool = True,
        ffn_layer: str = "mlp",
        in_chans: int = 3,
    ):
        super().__init__()
        if ffn_layer == "swiglu":
            raise NotImplementedError("the SwiGLU FFN of DINOv2 ViT-g is not implemented")
        if ffn_layer != "mlp":
            raise ValueError(f"ffn_layer must be 'mlp' or 'swiglu', got {ffn_layer!r}")
        for name, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads),
                            ("patch_size", patch_size), ("pos_grid", pos_grid)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if num_register_tokens < 0 or interpolate_offset < 0:
            raise ValueError("num_register_tokens and interpolate_offset must be non-negative")

        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = float(interpolate_offset)
        self.interpolate_antialias = interpolate_antialias
        self.in_chans = in_chans

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim)) if has_mask_token else None
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self._pos_cache: TensorCache[tuple[torch.Tensor, torch.Tensor]] = TensorCache(POS_SIZES_KEPT)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Official DINOv2 initialisation (only matters for training; inference loads weights)."""
        # Embeddings: truncated normal position table, near-zero CLS and registers, zero mask token.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        if self.mask_token is not None:
            nn.init.zeros_(self.mask_token)
        # Linear layers: truncated normal weights, zero biases (timm ViT init); LayerScale at 1.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, LayerScale):
                nn.init.ones_(module.gamma)

    # -- tokens -------------------------------------------------------------------------------------

    def token_grid(self, x: torch.Tensor) -> tuple[int, int]:
        """Validate an input image batch and return its patch grid ``(rows, cols)``.

        Raises:
            ValueError: if ``x`` is not (N, in_chans, H, W) with H, W positive multiples of patch_size.
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected an (N, {self.in_chans}, H, W) image, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        p = self.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a positive multiple of patch size {p}")
        return height // p, width // p

    def interpolate_pos_encoding(self, rows: int, cols: int) -> torch.Tensor:
        """Position embedding resized to a ``rows x cols`` patch grid, float32.

        The official rule: the learned table is used unchanged for the native ``G x G`` grid; otherwise
        its grid part is resampled bicubically (``align_corners=False``) in float32, by scale factor
        ``((rows + offset)/G, (cols + offset)/G)`` when ``interpolate_offset`` is non-zero, else to
        ``size=(rows, cols)``, with ``interpolate_antialias``. The CLS row is kept as is.

        Resized tables are cached per grid and state of ``pos_embed`` (see ``_pos_cache_key``), except
        while exporting, compiling, tracing or capturing a CUDA graph; cached or not, the values are the same.

        Returns:
            (1, 1 + rows*cols, D) float32; read-only.
        """
        if torch.compiler.is_exporting():  # symbolic rows/cols: no Python branch on them, no scale_factor
            return self._traceable_pos_encoding(rows, cols)
        if rows == self.pos_grid and cols == self.pos_grid:
            return self.pos_embed.float()
        key = self._pos_cache_key(rows, cols)
        if key is None:
            return self._resized_pos_encoding(rows, cols)

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            # the entry holds the source storage: its address cannot be reused while the key lives
            return self.pos_embed.detach(), self._resized_pos_encoding(rows, cols)

        return self._pos_cache.get(key, make, self.pos_embed.device)[1]

    def _pos_cache_key(self, rows: int, cols: int) -> tuple | None:
        """Key of the resized table: the grid, the resize rule (offset, antialias) and the device, dtype,
        storage and version counter of ``pos_embed`` (an in-place write, e.g. ``load_state_dict``, or new
        data makes a new key; writes through ``pos_embed.data`` bypass the version counter and are not
        seen). None when it must not be cached: while exporting, compiling, tracing or capturing, while
        ``pos_embed`` is trained (grad enabled and required), or when it is an inference tensor (no
        version counter)."""
        pos = self.pos_embed
        if not caching_allowed(pos.device) or pos.is_inference() or (pos.requires_grad and torch.is_grad_enabled()):
            return None
        return (rows, cols, self.interpolate_offset, self.interpolate_antialias,
                pos.device, pos.dtype, pos.data_ptr(), pos._version)

    def _resized_pos_encoding(self, rows: int, cols: int) -> torch.Tensor:
        """:meth:`interpolate_pos_encoding` off the native grid, computed: (1, 1 + rows*cols, D) float32."""
        grid, dim = self.pos_grid, self.embed_dim
        pos_embed = self.pos_embed.float()
        table = pos_embed[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2)  # (1, D, G, G)
        if self.interpolate_offset:
            scale = ((rows + self.interpolate_offset) / grid, (cols + self.interpolate_offset) / grid)
            table = F.interpolate(table, scale_factor=scale, mode="bicubic",
                                  antialias=self.interpolate_antialias)
        else:
            table = F.interpolate(table, size=(rows, cols), mode="bicubic",
                                  antialias=self.interpolate_antialias)
        if table.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position grid resized to {tuple(table.shape[-2:])}, expected {(rows, cols)}")
        table = table.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)  # raster order
        return torch.cat([pos_embed[:, :1], table], dim=1)

    def _traceable_pos_encoding(self, rows, cols) -> torch.Tensor:
        """:meth:`interpolate_pos_encoding` written for ``torch.export`` with dynamic ``rows``, ``cols``.

        The bicubic resize (``align_corners=False``, A = -0.75, border-clamped taps, no antialias) is
        separable, so it is two matmuls with ``(rows, G)`` and ``(cols, G)`` weight matrices built from
        ``arange``; the native ``G x G`` grid selects identity matrices (the official "no resize" rule).
        Equal to the eager resize up to float32 rounding (PyTorch's own float32 bicubic is ~1e-5 off a
        float64 one on unit-scale tables, and so is this).

        Raises:
            NotImplementedError: for antialiased resizes (the ``*_reg`` models), not exportable this way.
        """
        if self.interpolate_antialias:
            raise NotImplementedError("ONNX export of the antialiased position-embedding resize (DINOv2 *_reg) "
                                      "is not supported; export at fixed sizes instead")
        grid, dim = self.pos_grid, self.embed_dim
        pos_embed = self.pos_embed.float()
        weight_r, native_r = _bicubic_weights(rows, grid, self.interpolate_offset, pos_embed.device)  # (rows, G)
        weight_c, native_c = _bicubic_weights(cols, grid, self.interpolate_offset, pos_embed.device)  # (cols, G)
        native = native_r & native_c  # 0-d bool: the G x G grid is used as is
        weight_r = torch.where(native, _identity(rows, grid, pos_embed.device), weight_r)
        weight_c = torch.where(native, _identity(cols, grid, pos_embed.device), weight_c)
        table = pos_embed[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2)  # (1, D, G, G)
        table = weight_r @ table @ weight_c.transpose(0, 1)  # (1, D, rows, cols)
        table = table.permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, rows*cols, D) raster order
        return torch.cat([pos_embed[:, :1], table], dim=1)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> block input tokens ``[CLS, registers, patches]`` with position embedding added.

        Args:
            x: (N, in_chans, rows*p, cols*p) normalised image.

        Returns:
            (N, 1 + R + rows*cols, D).
        """
        rows, cols = self.token_grid(x)
        n = x.shape[0]
        tokens = self.patch_embed(x)  # (N, rows*cols, D)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(rows, cols).to(tokens.dtype)
        if self.register_tokens is not None:  # registers carry no position embedding
            tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(n, -1, -1), tokens[:, 1:]], dim=1)
        return tokens

    # -- outputs ------------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final-LayerNorm'ed patch tokens (the official ``x_norm_patchtokens``).

        Args:
            x: (N, in_chans, rows*p, cols*p) normalised image.

        Returns:
            (N, rows*cols, D), raster order; CLS and register tokens dropped.
        """
        tokens = self.prepare_tokens(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + self.num_register_tokens:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)

    def resolve_layer_indices(self, indices: int | Sequence[int]) -> list[int]:
        """0-based block indices: an int ``n`` means the last ``n`` blocks.

        Raises:
            ValueError: for ``n`` outside [1, depth], or a list that is empty, not strictly increasing
                or has an index outside [0, depth).
        """
        if isinstance(indices, bool):
            raise ValueError(f"layer indices must be an int or a list of ints, got {indices!r}")
        if isinstance(indices, int):
            if not 1 <= indices <= self.depth:
                raise ValueError(f"cannot take the last {indices} of {self.depth} blocks")
            return list(range(self.depth - indices, self.depth))
        resolved = [int(i) for i in indices]
        if not resolved or any(b <= a for a, b in zip(resolved, resolved[1:])):
            raise ValueError(f"layer indices must be a non-empty strictly increasing list, got {resolved}")
        if resolved[0] < 0 or resolved[-1] >= self.depth:
            raise ValueError(f"layer indices {resolved} out of range for {self.depth} blocks")
        return resolved

    def get_intermediate_layers(
        self, x: torch.Tensor, indices: int | Sequence[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Outputs of selected blocks, each passed through the final LayerNorm.

        Args:
            x: (N, in_chans, rows*p, cols*p) normalised image.
            indices: 0-based block indices (strictly increasing), or an int ``n`` for the last n blocks.

        Returns:
            One ``(patch_tokens (N, rows*cols, D), cls_token (N, D))`` pair per selected block, in
            block order; register tokens dropped.
        """
        wanted = self.resolve_layer_indices(indices)
        tokens = self.prepare_tokens(x)
        outputs = []
        for i, block in enumerate(self.blocks[: wanted[-1] + 1]):  # later blocks cannot matter
            tokens = block(tokens)
            if i in wanted:
                normed = self.norm(tokens)
                outputs.append((normed[:, 1 + self.num_register_tokens:], normed[:, 0]))
        return outputs


def _identity(size, grid: int, device: torch.device) -> torch.Tensor:
    """(size, grid) float32 identity (size == grid when it is used); traceable."""
    return (torch.arange(size, device=device)[:, None] == torch.arange(grid, device=device)).float()


def _bicubic_weights(size, grid: int, offset: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(size, grid) float32 weights of PyTorch's 1-D bicubic resize from ``grid`` to ``size`` samples,
    and a 0-d bool tensor ``size == grid``.

    ``F.interpolate(mode="bicubic", align_corners=False)`` with ``scale_factor=(size + offset)/grid``
    (offset > 0) or ``size=`` (offset 0): source ``x = (i + 0.5) * s - 0.5``, taps ``floor(x) - 1 ..
    floor(x) + 2`` clamped to the border, Keys cubic with A = -0.75. Built from ``arange``: traceable.
    """
    a = -0.75
    index = torch.arange(size, device=device, dtype=torch.float32)  # (size,)
    count = index[-1:] + 1  # (1,) = size, as a tensor
    scale = grid / (count + offset) if offset else grid / count
    source = (index + 0.5) * scale - 0.5
    base = source.floor()
    t = source - base
    coeffs = [
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    ]
    columns = torch.arange(grid, device=device, dtype=torch.float32)  # (G,)
    weights = sum(c[:, None] * ((base + k - 1).clamp(0, grid - 1)[:, None] == columns).float()
                  for k, c in enumerate(coeffs))  # (size, G)
    return weights, (count == grid)[0]


# ---------------------------------------------------------------------------------------------------
# Registry of the official torch.hub names
# ---------------------------------------------------------------------------------------------------

_REGISTERS = dict(num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)

DINOV2_ARCHITECTURES: dict[str, dict] = {
    "dinov2_vits14": dict(embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": dict(embed_dim=768, depth=12, num_heads=12),
    "dinov2_vitl14": dict(embed_dim=1024, depth=24, num_heads=16),
    "dinov2_vitg14": dict(embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglu"),
    "dinov2_vits14_reg": dict(embed_dim=384, depth=12, num_heads=6, **_REGISTERS),
    "dinov2_vitb14_reg": dict(embed_dim=768, depth=12, num_heads=12, **_REGISTERS),
    "dinov2_vitl14_reg": dict(embed_dim=1024, depth=24, num_heads=16, **_REGISTERS),
    "dinov2_vitg14_reg": dict(embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglu", **_REGISTERS),
    # Not an official DINOv2: the tiny encoder of pixel_perfect_ros's bundled model (trained here).
    "ppr_vitt14": dict(embed_dim=192, depth=6, num_heads=3),
}
"""Official DINOv2 hub names -> :class:`DinoVisionTransformer` keyword arguments.

All use patch 14, a 37x37 position grid (img_size 518), MLP ratio 4, LayerScale and a ``mask_token``;
the plain models resize position embeddings with offset 0.1 and no antialias, the ``*_reg`` models with
4 registers, offset 0 (``size=``) and antialias. The ViT-g models need the SwiGLU FFN, which is not
implemented: building them raises NotImplementedError.
"""


def dinov2_from_name(name: str, **overrides) -> DinoVisionTransformer:
    """Build the DINOv2 backbone registered as ``name`` in :data:`DINOV2_ARCHITECTURES`.

    Args:
        name: hub name, e.g. ``"dinov2_vitl14"``.
        **overrides: keyword arguments replacing the registered ones (e.g. ``has_mask_token=False``).

    Raises:
        ValueError: for an unregistered name.
        NotImplementedError: for the ViT-g (SwiGLU) models.
    """
    if name not in DINOV2_ARCHITECTURES:
        raise ValueError(f"unknown DINOv2 backbone {name!r}; known: {sorted(DINOV2_ARCHITECTURES)}")
    return DinoVisionTransformer(**{**DINOV2_ARCHITECTURES[name], **overrides})
