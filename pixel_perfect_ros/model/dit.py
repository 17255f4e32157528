"""The Pixel-Perfect Depth DiT: SP-DiT (semantics-prompted) with the Cas-DiT 16 px -> 8 px cascade.

Same state-dict names and numerics as the official `ppd/models/dit.py::DiT` (PPD_SPEC.md 1.4):

    x (N,4,H,W) --PatchEmbed 16px--> tokens (N, h*w, D)                  h, w = H/16, W/16
      blocks[0 : depth//2]      on the coarse h x w grid (2D RoPE, base 100)
      fusion: MLP([tokens, l2norm(semantics)]) -> (N, h*w, 4D) -> split into (N, 2h*2w, D)
      blocks[depth//2 : depth]  on the fine 2h x 2w grid (its own integer RoPE positions)
    FinalLayer -> (N, 4hw, 64) --unpatchify 8px--> (N, 1, H, W)

Export-friendly: every shape-dependent table (RoPE positions, cos/sin) is built from `torch.arange`
of the grid size read from `x.shape`; no `.item()` or data-dependent shapes. In eager runs the RoPE tables
of the last few image sizes are cached per module (`DiT.rope_tables`); the cache is bypassed while
exporting, compiling, tracing or capturing a CUDA graph (`tensor_cache.caching_allowed`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .tensor_cache import TensorCache

SEMANTICS_DIM = 1024  # semantics token width; a literal in the official code, not a ctor arg
ROPE_BASE = 100.0
TIMESTEP_FREQ_DIM = 256
ROPE_SIZES_KEPT = 4
"""Image sizes whose RoPE tables a DiT keeps (each size: cos and sin of h*w + 4*h*w tokens x head_dim, float32:
7.9 MB at 1024x768 with head_dim 64)."""


# ------------------------------------------------------------------------------------------------
# Embedders
# ------------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Non-overlapping square patches -> tokens in raster order (no position embedding)."""

    def __init__(self, patch_px: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_px, stride=patch_px)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, (H/patch)*(W/patch), D); token r*w+c is patch (r, c)."""
        return self.proj(x).flatten(2).transpose(1, 2)


def timestep_embedding(t: torch.Tensor, dim: int = TIMESTEP_FREQ_DIM,
                       max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of raw timesteps, cos first then sin, in float32.

    Args:
        t: (B,) timesteps, int or float, raw values in [-1, 1000] (not divided by T).
        dim: embedding width (even).
        max_period: lowest frequency is 1 / max_period.
    Returns:
        (B, dim) float32: [cos(t*f_0..t*f_{dim/2-1}), sin(t*f_0..)], f_j = max_period^(-j/(dim/2)).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Timesteps -> conditioning vectors: 256-d sinusoid, Linear, SiLU, Linear."""

    def __init__(self, hidden_size: int, frequency_dim: int = TIMESTEP_FREQ_DIM):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: 0-d or (B,) -> (1 or B, D); a 0-d timestep gives one row that broadcasts over N."""
        emb = timestep_embedding(t.reshape(-1), self.frequency_dim)  # (B, 256) float32
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


# ------------------------------------------------------------------------------------------------
# 2D RoPE (base 100)
# ------------------------------------------------------------------------------------------------

def grid_positions(h, w, device=None) -> torch.Tensor:
    """Integer (row, col) of every cell of an h x w grid in raster order: (h*w, 2) int64."""
    rows = torch.arange(h, device=device)[:, None].expand(h, w)
    cols = torch.arange(w, device=device)[None, :].expand(h, w)
    return torch.stack([rows, cols], dim=-1).reshape(-1, 2)


def rope2d_cos_sin(positions: torch.Tensor, head_dim: int,
                   base: float = ROPE_BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of the 2D rotary embedding, float32.

    The first half of a head vector is rotated by the row, the second half by the column. Each half
    (size m = head_dim/2) pairs element j with j + m/2 ("rotate half"), angle pos * base^(-2j/m).

    Args:
        positions: (..., L, 2) integer (row, col).
        head_dim: size of one head vector, divisible by 4.
    Returns:
        cos, sin: (..., L, head_dim) float32, laid out to match `apply_rope2d`.
    """
    m = head_dim // 2
    inv_freq = base ** (-torch.arange(0, m, 2, dtype=torch.float32, device=positions.device) / m)
    pos = positions.to(torch.float32)
    ang_r = pos[..., 0:1] * inv_freq  # (..., L, m/2)
    ang_c = pos[..., 1:2] * inv_freq  # (..., L, m/2)
    angles = torch.cat([ang_r, ang_r, ang_c, ang_c], dim=-1)  # (..., L, head_dim)
    return angles.cos(), angles.sin()


def apply_rope2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate head vectors; the tables are cast to x's dtype.

    Args:
        x: (N, heads, L, head_dim).
        cos, sin: from `rope2d_cos_sin`, broadcastable to x: (L, head_dim) or (N, 1, L, head_dim).
    """
    # per half [a | b] -> [-b | a]; x viewed as (..., half=2, part=2, head_dim/4)
    parts = x.unflatten(-1, (2, 2, -1))
    rotated = torch.cat([-parts[..., 1:2, :], parts[..., 0:1, :]], dim=-2).flatten(-3)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ------------------------------------------------------------------------------------------------
# Transformer block
# ------------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head self-attention with qk LayerNorm and, when given cos/sin tables, 2D RoPE on q and k.

    Without tables it is timm's ``Attention(qkv_bias=True, qk_norm=True)`` (the PPVD DiT_Video).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-5)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-5)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None = None,
                sin: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, L, D); cos, sin: (L, head_dim) RoPE tables or None (no RoPE) -> (N, L, D)."""
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        if cos is not None:
            q, k = apply_rope2d(q, cos, sin), apply_rope2d(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, head_dim)
        return self.proj(o.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: (N, L, D); shift, scale: (N or 1, D), broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on the timestep vector."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor | None = None,
                sin: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, L, D); c: (N or 1, D); cos, sin: (L, head_dim) or None (no RoPE) -> (N, L, D)."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (
            self.adaLN_modulation(c).chunk(6, dim=-1))  # each (N or 1, D)
        attn_in = modulate(self.norm1(x), shift_a, scale_a)
        x = x + gate_a.unsqueeze(1) * self.attn(attn_in, cos, sin)
        x = x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear map to patch_size^2 * out_channels per token."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, L, D); c: (N or 1, D) -> (N, L, p*p*out_channels)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SemanticsFusion(nn.Sequential):
    """The Cas-DiT step: MLP over [tokens, l2norm(semantics)] to 4D channels, then 2x2 token split.

    Keys ``0, 2, 4`` (the three linears) as the official ``proj_fusion`` Sequential.
    """

    def __init__(self, hidden_size: int, semantics_dim: int = SEMANTICS_DIM):
        super().__init__(
            nn.Linear(hidden_size + semantics_dim, 4 * hidden_size), nn.SiLU(),
            nn.Linear(4 * hidden_size, 4 * hidden_size), nn.SiLU(),
            nn.Linear(4 * hidden_size, 4 * hidden_size),
        )

    def forward(self, tok: torch.Tensor, semantics: torch.Tensor, h, w) -> torch.Tensor:
        """tok: (N, h*w, D) coarse tokens; semantics: (N, h*w, semantics_dim) -> (N, 2h*2w, D)."""
        sem = F.normalize(semantics, dim=-1).to(tok.dtype)  # eps 1e-12
        z = super().forward(torch.cat([tok, sem], dim=-1))  # (N, h*w, 4D)
        return split_tokens(z, h, w)  # no residual across the split


# ------------------------------------------------------------------------------------------------
# Token re-arrangements (permute/reshape only, for export)
# ------------------------------------------------------------------------------------------------

def split_tokens(z: torch.Tensor, h, w) -> torch.Tensor:
    """Split each coarse token into 2x2 fine tokens.

    Args:
        z: (N, h*w, 4*D); channel block 2a+b of coarse token (r, c) is fine token (2r+a, 2c+b).
    Returns:
        (N, 2h*2w, D) in raster order of the 2h x 2w grid.
    """
    n, _, channels = z.shape
    dim = channels // 4
    z = z.reshape(n, h, w, 2, 2, dim).permute(0, 1, 3, 2, 4, 5)  # (N, h, a, w, b, D)
    return z.reshape(n, -1, dim)


def unpatchify(y: torch.Tensor, h, w, patch_size: int) -> torch.Tensor:
    """Patch tokens back to an image.

    Args:
        y: (N, h*w, p*p*C); channel (u*p + v)*C + ch of token (R, Cc) is pixel (p*R+u, p*Cc+v).
        h, w: token grid size.
    Returns:
        (N, C, h*p, w*p).
    """
    n, _, channels = y.shape
    p = patch_size
    c = channels // (p * p)
    y = y.reshape(n, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (N, C, h, p, w, p)
    return y.reshape(n, c, h * p, w * p)


# ------------------------------------------------------------------------------------------------
# DiT
# ------------------------------------------------------------------------------------------------

def initialize_dit_weights(model: nn.Module, blocks) -> None:
    """Training init: xavier linears, normal(0.02) timestep MLP, zero adaLN (of `blocks` and the final
    layer) and output layer. `model` has `x_embedder`, `t_embedder` and `final_layer` as in `DiT`."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    # patch embed like a linear layer over the flattened patch
    proj = model.x_embedder.proj
    nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    nn.init.zeros_(proj.bias)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)
    for layer in [block.adaLN_modulation[1] for block in blocks] + [
            model.final_layer.adaLN_modulation[1], model.final_layer.linear]:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


class DiT(nn.Module):
    """PPD DiT: depth//2 blocks on 2p-px tokens, fusion + 2x2 split, depth//2 blocks on p-px tokens.

    Args:
        in_channels: input channels, [noisy depth latent, RGB - 0.5] = 4.
        out_channels: predicted channels (velocity) = 1.
        hidden_size: token width D.
        depth: number of blocks; the fusion/split happens after block depth//2 - 1.
        num_heads: attention heads; head_dim = hidden_size / num_heads must be divisible by 4.
        patch_size: fine (output) patch p in px; the input patch embed uses 2p.
        mlp_ratio: MLP hidden width / D.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 1, hidden_size: int = 1024,
                 depth: int = 24, num_heads: int = 16, patch_size: int = 8,
                 mlp_ratio: float = 4.0):
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 4:
            raise ValueError(f"hidden_size {hidden_size} / num_heads {num_heads} must give an "
                             "integer head_dim divisible by 4 (2D RoPE)")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_size = hidden_size
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.split_after = depth // 2 - 1  # index of the last coarse block

        self.x_embedder = PatchEmbed(2 * patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.proj_fusion = SemanticsFusion(hidden_size)
        self.final_layer = FinalLayer(hidden_size, patch_size, out_channels)
        self._rope_cache: TensorCache[tuple[torch.Tensor, ...]] = TensorCache(ROPE_SIZES_KEPT)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Training init (see `initialize_dit_weights`)."""
        initialize_dit_weights(self, self.blocks)

    def _check_inputs(self, x: torch.Tensor, semantics: torch.Tensor) -> None:
        patch_px = 2 * self.patch_size
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % patch_px or width % patch_px:
            raise ValueError(f"x height and width must be multiples of {patch_px} px, "
                             f"got {height}x{width}")
        expected = (x.shape[0], (height // patch_px) * (width // patch_px), SEMANTICS_DIM)
        if tuple(semantics.shape) != expected:
            raise ValueError(f"semantics must be (N, (H/{patch_px})*(W/{patch_px}), "
                             f"{SEMANTICS_DIM}) = {expected} for x {tuple(x.shape)}, "
                             f"got {tuple(semantics.shape)}")

    def rope_tables(self, h, w, device: torch.device) -> tuple[torch.Tensor, ...]:
        """RoPE tables of the coarse h x w and the fine 2h x 2w token grids, cached per (h, w, device).

        The tables are float32 whatever the model's dtype and depend on nothing else (head_dim is fixed),
        so (h, w, device) is the whole key. Not cached while exporting, compiling, tracing or capturing
        a CUDA graph: they are then built from ``arange`` of the grid, in the graph.

        Returns:
            cos_c, sin_c: (h*w, head_dim) float32; cos_f, sin_f: (4*h*w, head_dim) float32. Read-only.
        """
        def make() -> tuple[torch.Tensor, ...]:
            coarse = rope2d_cos_sin(grid_positions(h, w, device), self.head_dim)
            fine = rope2d_cos_sin(grid_positions(2 * h, 2 * w, device), self.head_dim)
            return (*coarse, *fine)

        return self._rope_cache.get((h, w, device), make, device)

    def forward(self, x: torch.Tensor, semantics: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
        """Predict the flow velocity (noise - data).

        Args:
            x: (N, in_channels, H, W) float, H and W multiples of 2p (16); [latent, RGB - 0.5].
            semantics: (N, (H/16)*(W/16), 1024) float, semantics tokens in raster order.
            timestep: 0-d (shared by the batch) or (N,), int or float, raw values in [-1, 1000].
        Returns:
            (N, out_channels, H, W), same dtype as the model.
        """
        self._check_inputs(x, semantics)
        h = x.shape[-2] // (2 * self.patch_size)
        w = x.shape[-1] // (2 * self.patch_size)
        cos_c, sin_c, cos_f, sin_f = self.rope_tables(h, w, x.device)

        tok = self.x_embedder(x)  # (N, h*w, D)
        c = self.t_embedder(timestep)  # (1 or N, D)
        cos, sin = cos_c, sin_c
        for i, block in enumerate(self.blocks):
            tok = block(tok, c, cos, sin)
            if i == self.split_after:
                tok = self.proj_fusion(tok, semantics, h, w)  # (N, 2h*2w, D)
                cos, sin = cos_f, sin_f
        out = self.final_layer(tok, c)  # (N, 2h*2w, p*p*out_channels)
        return unpatchify(out, 2 * h, 2 * w, self.patch_size)  # (N, out_channels, H, W)


# ------------------------------------------------------------------------------------------------
# Config recovery
# ------------------------------------------------------------------------------------------------

_CONFIG_KEYS = ("x_embedder.proj.weight", "blocks.0.attn.q_norm.weight",
                "blocks.0.mlp.fc1.weight", "final_layer.linear.weight")


def dit_config_from_state_dict(state_dict) -> dict:
    """Constructor kwargs of `DiT` implied by a DiT state dict (keys without a 'dit.' prefix).

    Assumes the official layout: the input patch embed is square with side 2 * patch_size, and the
    final linear maps to patch_size^2 * out_channels features.

    Raises:
        ValueError: a key needed to read the config is missing, or the shapes are inconsistent.
    """
    missing = [k for k in _CONFIG_KEYS if k not in state_dict]
    if missing:
        raise ValueError(f"not a DiT state dict (without prefix): missing keys {missing}")
    embed = state_dict["x_embedder.proj.weight"]  # (D, in_channels, 2p, 2p)
    hidden_size, in_channels, kernel = embed.shape[0], embed.shape[1], embed.shape[-1]
    head_dim = state_dict["blocks.0.attn.q_norm.weight"].shape[0]
    out_features = state_dict["final_layer.linear.weight"].shape[0]
    patch_size = kernel // 2
    if kernel % 2 or hidden_size % head_dim or out_features % (patch_size * patch_size):
        raise ValueError(f"inconsistent DiT shapes: patch embed kernel {kernel}, hidden "
                         f"{hidden_size}, head_dim {head_dim}, final features {out_features}")
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    return {
        "in_channels": in_channels,
        "out_channels": out_features // (patch_size * patch_size),
        "hidden_size": hidden_size,
        "depth": depth,
        "num_heads": hidden_size // head_dim,
        "patch_size": patch_size,
        "mlp_ratio": state_dict["blocks.0.mlp.fc1.weight"].shape[0] / hidden_size,
    }
