"""Pi3 semantics encoder of PPVD (PPD_SPEC 3.3): DINOv2-reg encoder + alternating frame/global decoder.

State-dict keys are the official Pi3 names (``model.safetensors``), the subset ``forward_semantics`` uses
(``D`` = width, ``i`` = decoder block index)::

    encoder.*                    DINOv2 ViT/14 with 4 registers and no mask_token (see dinov2.py)
    decoder.i.{norm1, attn.qkv, attn.q_norm, attn.k_norm, attn.proj, ls1.gamma, norm2, mlp.fc1,
               mlp.fc2, ls2.gamma}.*
    register_token (1, 1, 5, D)  image_mean (1, 3, 1, 1)  image_std (1, 3, 1, 1)

Decoder token layout per frame: ``[5 registers, patches in raster order]``; even blocks attend within each
frame, odd blocks over all frames of the clip at once.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pixel_perfect_ros.model.dinov2 import (
    DINOV2_ARCHITECTURES,
    LAYER_NORM_EPS,
    DinoVisionTransformer,
    LayerScale,
    Mlp,
    dinov2_from_name,
)
from pixel_perfect_ros.model.dit import Attention, grid_positions, rope2d_cos_sin
from pixel_perfect_ros.model.semantics import IMAGENET_MEAN, IMAGENET_STD, SemanticsEncoder, semantics_token_grid

NUM_SPECIAL_TOKENS = 5
"""Learned decoder registers prepended to every frame (``register_token``)."""

PI3_ARCHITECTURE = dict(encoder="dinov2_vitl14_reg", decoder_depth=36, decoder_num_heads=16)
"""The released Pi3 (``decoder_size='large'``): ViT-L/14-reg encoder, 36 decoder blocks, width 1024."""


class RopeBlock(nn.Module):
    """Pi3's ``BlockRope``: pre-LN block (eps 1e-6), qk-LN + 2D RoPE attention, LayerScale, exact GELU."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)  # qk-LN eps 1e-5, as upstream (norm_layer not passed on)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: (N, L, D); cos, sin: (L, head_dim) RoPE tables -> (N, L, D)."""
        x = x + self.ls1(self.attn(self.norm1(x), cos, sin))
        return x + self.ls2(self.mlp(self.norm2(x)))


class Pi3Semantics(SemanticsEncoder):
    """Pi3 as used by PPVD: encoder and decoder only (the point/conf/camera heads are not built).

    Args:
        encoder: DINOv2 with registers (``dinov2_vitl14_reg`` for the released model), ``encoder.*``.
        decoder_depth: number of decoder blocks (36 released); at least 2.
        decoder_num_heads: decoder attention heads (16 released).
        mlp_ratio: decoder FFN hidden width as a multiple of D.

    Raises:
        ValueError: for fewer than 2 decoder blocks, or heads that do not split D into RoPE-able halves.
    """

    def __init__(self, encoder: DinoVisionTransformer, decoder_depth: int, decoder_num_heads: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        dim = encoder.embed_dim
        if decoder_depth < 2:
            raise ValueError(f"the output concatenates the last two decoder blocks; got depth {decoder_depth}")
        if dim % decoder_num_heads or (dim // decoder_num_heads) % 4:
            raise ValueError(f"width {dim} / {decoder_num_heads} heads is not a head size divisible by 4")
        self.encoder = encoder
        self.decoder = nn.ModuleList(RopeBlock(dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth))
        self.register_token = nn.Parameter(torch.zeros(1, 1, NUM_SPECIAL_TOKENS, dim))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.head_dim = dim // decoder_num_heads
        self.out_dim = 2 * dim
        nn.init.normal_(self.register_token, std=1e-6)  # upstream init; inference loads weights

    @classmethod
    def from_architecture(cls, encoder: str, decoder_depth: int, decoder_num_heads: int) -> Pi3Semantics:
        """Build with a registered DINOv2-reg encoder name (random weights; load the checkpoint next)."""
        return cls(dinov2_from_name(encoder, has_mask_token=False), decoder_depth, decoder_num_heads)

    def rope_tables(self, rows: int, cols: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cos/sin of one frame: specials at (0, 0), patches at (row + 1, col + 1).

        Returns:
            cos, sin: (5 + rows*cols, head_dim) float32.
        """
        positions = torch.cat([torch.zeros(NUM_SPECIAL_TOKENS, 2, dtype=torch.int64, device=device),
                               grid_positions(rows, cols, device) + 1])  # (5 + rows*cols, 2)
        return rope2d_cos_sin(positions, self.head_dim)

    def decoder_states(self, tokens: torch.Tensor, rows: int, cols: int) -> Iterator[torch.Tensor]:
        """Run the decoder on one clip, yielding every block's output (raw residual stream).

        Args:
            tokens: (F, rows*cols, D) encoder patch tokens of the F frames of one clip.

        Yields:
            (F, 5 + rows*cols, D) per block, in block order; specials first.
        """
        frames, _, dim = tokens.shape
        hidden = torch.cat([self.register_token[0].expand(frames, -1, -1), tokens], dim=1)  # (F, L, D)
        length = hidden.shape[1]
        cos, sin = self.rope_tables(rows, cols, tokens.device)  # (L, head_dim)
        cos_all, sin_all = cos.repeat(frames, 1), sin.repeat(frames, 1)  # (F*L, head_dim), frame-major
        for i, block in enumerate(self.decoder):
            if i % 2 == 0:  # within each frame
                hidden = block(hidden, cos, sin)
            else:  # globally over the clip: one sequence of F*L tokens
                hidden = block(hidden.reshape(1, frames * length, dim), cos_all, sin_all).reshape(frames, length, dim)
            yield hidden

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The per-frame DINOv2 part of ``forward_semantics``: resize, normalise, encode.

        No token of one frame depends on another frame, so a frame's tokens can be cached and reused in
        any later clip (``semantics_from_tokens``).

        Args:
            x: (F, 3, H, W) float32 RGB in [0, 1]; H and W multiples of 16.

        Returns:
            (F, (H//16) * (W//16), D) encoder patch tokens, raster order.
        """
        rows, cols = semantics_token_grid(x)
        p = self.encoder.patch_size
        x = F.interpolate(x, size=(rows * p, cols * p), mode="bilinear", align_corners=False)
        x = (x - self.image_mean) / self.image_std  # normalise AFTER resizing
        return self.encoder.forward_features(x)  # (F, rows*cols, D)

    def semantics_from_tokens(self, tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """The clip-level decoder part of ``forward_semantics``, on the frames' ``encode`` tokens.

        Args:
            tokens: (F, rows*cols, D) encoder tokens of the F frames of one clip (the odd decoder blocks
                attend over all of them).
            rows, cols: the 16-px token grid, (H//16, W//16).

        Returns:
            (F, rows*cols, 2*D), raster order: last two decoder blocks concatenated on channels.
        """
        last_two = deque(self.decoder_states(tokens, rows, cols), maxlen=2)
        return torch.cat(tuple(last_two), dim=-1)[:, NUM_SPECIAL_TOKENS:]  # (F, rows*cols, 2D)

    def forward_semantics(self, x: torch.Tensor) -> torch.Tensor:
        """Semantic tokens of one clip on the 16-px grid: ``encode``, then ``semantics_from_tokens``.

        Args:
            x: (F, 3, H, W) float32 RGB in [0, 1], the frames of one clip; H and W multiples of 16.

        Returns:
            (F, (H//16) * (W//16), 2*D), raster order: last two decoder blocks concatenated on channels.
        """
        rows, cols = semantics_token_grid(x)
        return self.semantics_from_tokens(self.encode(x), rows, cols)


def pi3_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Constructor kwargs of :class:`Pi3Semantics` (encoder as DINOv2 kwargs) implied by Pi3 key shapes.

    The encoder's head count is not in any shape: it is taken from the DINOv2 registry when width,
    depth and register count match a registered model (the released ViT-L/14-reg), else it is assumed
    equal to the decoder's, as in the released Pi3 (16 and 16).

    Returns:
        ``{"encoder": DinoVisionTransformer kwargs, "decoder_depth", "decoder_num_heads", "mlp_ratio"}``.

    Raises:
        ValueError: a key needed to read the config is missing.
    """
    needed = ["encoder.pos_embed", "encoder.patch_embed.proj.weight", "encoder.register_tokens",
              "decoder.0.attn.q_norm.weight", "decoder.0.mlp.fc1.weight"]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ValueError(f"not a Pi3 state dict: missing keys {missing}")
    pos_embed = state_dict["encoder.pos_embed"]  # (1, 1 + G*G, D)
    dim = pos_embed.shape[-1]
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("encoder.blocks.")})
    registers = state_dict["encoder.register_tokens"].shape[1]
    decoder_heads = dim // state_dict["decoder.0.attn.q_norm.weight"].shape[0]
    registered = [arch for arch in DINOV2_ARCHITECTURES.values()
                  if (arch["embed_dim"], arch["depth"], arch.get("num_register_tokens", 0)) == (dim, depth, registers)]
    encoder = dict(
        embed_dim=dim, depth=depth,
        num_heads=registered[0]["num_heads"] if registered else decoder_heads,
        patch_size=state_dict["encoder.patch_embed.proj.weight"].shape[-1],
        pos_grid=round((pos_embed.shape[1] - 1) ** 0.5),
        num_register_tokens=registers, interpolate_offset=0.0, interpolate_antialias=True, has_mask_token=False,
    )
    return {
        "encoder": encoder,
        "decoder_depth": len({k.split(".")[1] for k in state_dict if k.startswith("decoder.")}),
        "decoder_num_heads": decoder_heads,
        "mlp_ratio": state_dict["decoder.0.mlp.fc1.weight"].shape[0] / dim,
    }


def pi3_semantics_from_config(config: Mapping) -> Pi3Semantics:
    """Build from :func:`pi3_config_from_state_dict` output (random weights)."""
    return Pi3Semantics(DinoVisionTransformer(**config["encoder"]), config["decoder_depth"],
                        config["decoder_num_heads"], config["mlp_ratio"])
