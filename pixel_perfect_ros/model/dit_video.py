"""The Pixel-Perfect Video Depth DiT: the PPD DiT with temporal blocks and reference tokens.

Same state-dict names and numerics as the official `ppd/models/dit_video.py::DiT_Video`
(PPD_SPEC.md 3.4). Differences from `dit.DiT`: a fixed 2D sin-cos `pos_embed` instead of RoPE, 2048-wide
(Pi3) semantics, and, on the N frames of one window:

    x (N,4,512,512) --PatchEmbed 16px + pos_embed--> (N, 1024, D)
      blocks[0:12] on 32x32 tokens, fusion + 2x2 split -> (N, 4096, D), blocks[12:24] on 64x64 tokens
      before blocks 21..23: temporal_blocks[0..2] attend over the frame axis (no position encoding)
      blocks 18..23 also see 3 x 256 reference tokens: frames 0,1,2 avg-pooled 4x4, dropped after
    FinalLayer -> unpatchify 8px -> (N, 1, 512, 512)

The block indices are literals upstream, so only depth 24 is accepted.

Blocks 0..17 are per-frame; the frames of a window interact only through the temporal blocks and the
pooled reference tokens. ``forward_recording`` returns what a window's reference frames give the other
frames (``ReferenceTokens``), and ``forward_with_references`` runs new frames alone against such recorded
tokens (the streaming mode ``stream_cached`` of inference/video_stream.py).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dit import (DiTBlock, FinalLayer, PatchEmbed, SemanticsFusion, TimestepEmbedder,
                  dit_config_from_state_dict, initialize_dit_weights, unpatchify)

VIDEO_SEMANTICS_DIM = 2048  # Pi3 semantics token width, a literal upstream
VIDEO_DEPTH = 24  # the block indices below assume it
REFERENCE_FROM_BLOCK = 18  # blocks 18..23 (0-based) see the reference tokens
TEMPORAL_FROM_BLOCK = 21  # temporal_blocks[i - 21] runs before block i for i in 21..23
REFERENCE_FRAMES = (0, 1, 2)  # window slots whose pooled tokens every frame sees
REFERENCE_POOL = 4  # avg-pool kernel and stride on the fine token grid
POS_EMBED_BASE = 10000.0


# ------------------------------------------------------------------------------------------------
# Position embedding and reference tokens
# ------------------------------------------------------------------------------------------------

def sincos_1d(positions: torch.Tensor, dim: int, base: float = POS_EMBED_BASE) -> torch.Tensor:
    """positions: (L,) -> (L, dim) float64 [sin(pos*w_k), cos(pos*w_k)], w_k = base^(-k/(dim/2))."""
    omega = base ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.to(torch.float64)[:, None] * omega  # (L, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d_pos_embed(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed MAE/DiT-style 2D table, computed in float64 and rounded to float32.

    Returns:
        (grid_size**2, dim) float32 in raster order; channels [:dim/2] encode the column index,
        [dim/2:] the row index.
    """
    index = torch.arange(grid_size)
    rows = index.repeat_interleave(grid_size)  # (L,) row of token r*g+c
    cols = index.repeat(grid_size)  # (L,) column
    return torch.cat([sincos_1d(cols, dim // 2), sincos_1d(rows, dim // 2)], dim=-1).float()


def reference_tokens(tok: torch.Tensor, h, w) -> torch.Tensor:
    """Avg-pooled tokens of the reference frames, shared by every frame.

    Args:
        tok: (N, h*w, D) tokens of the N frames on the h x w grid (raster order), N > max frame.
    Returns:
        (N, R * (h/4)*(w/4), D), R = len(REFERENCE_FRAMES): frame 0's pooled tokens in raster order,
        then frame 1's, frame 2's.
    """
    n, _, dim = tok.shape
    grid = tok[list(REFERENCE_FRAMES)].transpose(1, 2).reshape(-1, dim, h, w)  # (R, D, h, w)
    pooled = F.avg_pool2d(grid, REFERENCE_POOL)  # (R, D, h/4, w/4)
    ref = pooled.flatten(2).transpose(1, 2).reshape(1, -1, dim)  # (1, R*hw/16, D)
    return ref.expand(n, -1, -1)


# ------------------------------------------------------------------------------------------------
# VideoDiT
# ------------------------------------------------------------------------------------------------

class VideoDiT(nn.Module):
    """PPVD DiT_Video: the PPD DiT over a window of frames, with temporal blocks and reference tokens.

    Args:
        input_size: the only accepted frame height and width, px (timm PatchEmbed's img_size).
        in_channels: input channels, [noisy depth latent, RGB - 0.5] = 4.
        out_channels: predicted channels (velocity) = 1.
        hidden_size: token width D, divisible by 4 (sin-cos table) and by num_heads.
        depth: number of blocks; must be 24 (hard-coded block indices upstream).
        num_heads: attention heads.
        patch_size: fine (output) patch p in px; the input patch embed uses 2p.
        mlp_ratio: MLP hidden width / D.
        semantics_dim: Pi3 token width (2 x the Pi3 decoder width; 2048 official).
    """

    def __init__(self, input_size: int = 512, in_channels: int = 4, out_channels: int = 1,
                 hidden_size: int = 1024, depth: int = 24, num_heads: int = 16, patch_size: int = 8,
                 mlp_ratio: float = 4.0, semantics_dim: int = VIDEO_SEMANTICS_DIM):
        super().__init__()
        if depth != VIDEO_DEPTH:
            raise ValueError(f"depth must be {VIDEO_DEPTH} (the temporal and reference-token block "
                             f"indices are fixed), got {depth}")
        if hidden_size % num_heads or hidden_size % 4:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads} "
                             "and by 4 (2D sin-cos table)")
        if input_size % (2 * patch_size) or (input_size // patch_size) % REFERENCE_POOL:
            raise ValueError(f"input_size {input_size} must be a multiple of {2 * patch_size} px "
                             f"with a fine grid divisible by {REFERENCE_POOL}")
        self.input_size = input_size
        self.in_channels = in_channels
        self.semantics_dim = semantics_dim
        self.patch_size = patch_size
        self.grid_size = input_size // (2 * patch_size)  # coarse tokens per side
        self.split_after = depth // 2 - 1  # index of the last coarse block

        # registration order = the official state-dict order
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size ** 2, hidden_size),
                                      requires_grad=False)
        self.x_embedder = PatchEmbed(2 * patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.temporal_blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio)
             for _ in range(TEMPORAL_FROM_BLOCK, depth)])
        self.proj_fusion = SemanticsFusion(hidden_size, semantics_dim)
        self.final_layer = FinalLayer(hidden_size, patch_size, out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Training init of `dit.initialize_dit_weights` (temporal adaLN zeroed too), sin-cos table."""
        initialize_dit_weights(self, [*self.blocks, *self.temporal_blocks])
        with torch.no_grad():
            table = sincos_2d_pos_embed(self.pos_embed.shape[-1], self.grid_size)
            self.pos_embed.copy_(table.unsqueeze(0).to(self.pos_embed.device))

    def _check_inputs(self, x: torch.Tensor, semantics: torch.Tensor, min_frames: int) -> None:
        size = self.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, size, size):
            raise ValueError(f"x must be (N, {self.in_channels}, {size}, {size}) (the video DiT only "
                             f"takes {size}x{size} frames), got {tuple(x.shape)}")
        if x.shape[0] < min_frames:
            raise ValueError(f"the video DiT needs at least {min_frames} frames here (reference frames "
                             f"{REFERENCE_FRAMES} in the window), got {x.shape[0]}")
        expected = (x.shape[0], self.grid_size ** 2, self.semantics_dim)
        if tuple(semantics.shape) != expected:
            raise ValueError(f"semantics must be (N, {self.grid_size ** 2}, {self.semantics_dim}) "
                             f"= {expected}, got {tuple(semantics.shape)}")

    def forward(self, x: torch.Tensor, semantics: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
        """Predict the flow velocity (noise - data) of every frame of a window.

        Args:
            x: (N, in_channels, input_size, input_size) float, N >= 3 frames; [latent, RGB - 0.5].
            semantics: (N, (input_size/16)^2, 2048) float, Pi3 tokens in raster order.
            timestep: 0-d (shared by the frames) or (N,), raw values in [-1, 1000].
        Returns:
            (N, out_channels, input_size, input_size), same dtype as the model.
        """
        self._check_inputs(x, semantics, len(REFERENCE_FRAMES))
        return self._run(x, semantics, timestep)[0]

    def forward_recording(self, x: torch.Tensor, semantics: torch.Tensor,
                          timestep: torch.Tensor) -> tuple[torch.Tensor, "ReferenceTokens"]:
        """``forward``, also returning the reference frames' tokens that the other frames see.

        Run on the 3 reference frames alone, this is the reference pass of ``stream_cached``: the
        references are denoised among themselves and their tokens can then serve any new frames
        (``forward_with_references``).

        Args: as ``forward``.
        Returns:
            The velocity (N, out_channels, input_size, input_size), and the ``ReferenceTokens`` of
            frames ``REFERENCE_FRAMES`` in this window.
        """
        self._check_inputs(x, semantics, len(REFERENCE_FRAMES))
        return self._run(x, semantics, timestep, record=True)

    def forward_with_references(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor,
                                references: "ReferenceTokens") -> torch.Tensor:
        """The velocity of K new frames placed after recorded reference frames, without recomputing them.

        Blocks 0..17 are per-frame as in ``forward``; blocks 18..23 append ``references.pooled`` instead
        of pooling from the batch, and each temporal block attends over [``references.temporal``; new
        frames] along the frame axis, keeping the new frames' outputs. Equal to the new frames' rows of
        ``forward`` on [references; new frames] when the references' tokens do not depend on the new
        frames (e.g. identity temporal blocks); otherwise the approximation of ``stream_cached``.

        Args:
            x: (K, in_channels, input_size, input_size) float, K >= 1 new frames; [latent, RGB - 0.5].
            semantics: (K, (input_size/16)^2, 2048) float, Pi3 tokens of the new frames.
            timestep: 0-d, the timestep at which ``references`` were recorded.
            references: from ``forward_recording`` at the same timestep.
        Returns:
            (K, out_channels, input_size, input_size), same dtype as the model.

        Raises:
            ValueError: for bad shapes, a per-frame timestep, or references of another depth.
        """
        self._check_inputs(x, semantics, 1)
        if timestep.ndim != 0:
            raise ValueError(f"forward_with_references takes one shared timestep, got shape {tuple(timestep.shape)}")
        if (len(references.pooled), len(references.temporal)) != \
                (len(self.blocks) - REFERENCE_FROM_BLOCK, len(self.temporal_blocks)):
            raise ValueError(f"references hold {len(references.pooled)} pooled and {len(references.temporal)} "
                             f"temporal entries, expected {len(self.blocks) - REFERENCE_FROM_BLOCK} and "
                             f"{len(self.temporal_blocks)}")
        return self._run(x, semantics, timestep, references=references)[0]

    def _run(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor,
             references: "ReferenceTokens | None" = None,
             record: bool = False) -> tuple[torch.Tensor, "ReferenceTokens | None"]:
        """The block loop shared by the forward variants (inputs already checked).

        ``references`` None: the window's own frames 0..2 are the references (``forward``); else the
        batch is new frames only and the reference side comes from ``references``. ``record`` returns the
        reference side as seen in this call.
        """
        g = self.grid_size
        num_refs = len(REFERENCE_FRAMES)
        pooled_seen, temporal_seen = [], []
        tok = self.x_embedder(x) + self.pos_embed  # (N, g*g, D)
        c = self.t_embedder(timestep)  # (1 or N, D)
        temporal = iter(self.temporal_blocks)
        for i, block in enumerate(self.blocks):
            if i >= TEMPORAL_FROM_BLOCK:  # frames as the sequence, positions as the batch
                if references is None:
                    if record:
                        temporal_seen.append(tok[list(REFERENCE_FRAMES)])  # (R, 4g*g, D)
                    tok = next(temporal)(tok.transpose(0, 1), c).transpose(0, 1)  # (N, 4g*g, D)
                else:
                    frames = torch.cat([references.temporal[i - TEMPORAL_FROM_BLOCK], tok])  # (R+K, 4g*g, D)
                    tok = next(temporal)(frames.transpose(0, 1), c).transpose(0, 1)[num_refs:]  # (K, 4g*g, D)
            if i >= REFERENCE_FROM_BLOCK:
                length = tok.shape[1]
                if references is None:
                    pooled = reference_tokens(tok, 2 * g, 2 * g)  # (N, 768, D)
                    if record:
                        pooled_seen.append(pooled[:1])  # (1, 768, D)
                else:
                    pooled = references.pooled[i - REFERENCE_FROM_BLOCK].expand(tok.shape[0], -1, -1)
                tok = torch.cat([tok, pooled], dim=1)  # (N, L+768, D)
                tok = block(tok, c)[:, :length]
            else:
                tok = block(tok, c)
            if i == self.split_after:
                tok = self.proj_fusion(tok, semantics, g, g)  # (N, 4g*g, D)
        out = self.final_layer(tok, c)  # (N, 4g*g, p*p*out_channels)
        velocity = unpatchify(out, 2 * g, 2 * g, self.patch_size)  # (N, out_channels, H, W)
        return velocity, ReferenceTokens(tuple(pooled_seen), tuple(temporal_seen)) if record else None


@dataclass(frozen=True)
class ReferenceTokens:
    """What the reference frames of a window give its other frames in one ``VideoDiT`` call.

    Attributes:
        pooled: per block i >= REFERENCE_FROM_BLOCK (6), the (1, R * (h/4)*(w/4), D) avg-pooled reference
            tokens that block appends (``reference_tokens``; h = w = input_size / patch_size).
        temporal: per temporal block (3), the (R, h*w, D) reference frames' tokens entering it.
    """

    pooled: tuple[torch.Tensor, ...]
    temporal: tuple[torch.Tensor, ...]


def video_dit_config_from_state_dict(state_dict) -> dict:
    """Constructor kwargs of `VideoDiT` implied by a DiT_Video state dict (keys without prefix).

    The semantics width is the fusion's input width minus the hidden size (2048 for the official file).

    Raises:
        ValueError: a key needed to read the config is missing, or the shapes are inconsistent.
    """
    if "pos_embed" not in state_dict:
        raise ValueError("not a DiT_Video state dict (without prefix): missing key pos_embed")
    config = dit_config_from_state_dict(state_dict)
    grid_size = math.isqrt(state_dict["pos_embed"].shape[1])
    if grid_size ** 2 != state_dict["pos_embed"].shape[1]:
        raise ValueError(f"pos_embed {tuple(state_dict['pos_embed'].shape)} is not a square grid")
    if "proj_fusion.0.weight" not in state_dict:
        raise ValueError("not a DiT_Video state dict (without prefix): missing key proj_fusion.0.weight")
    semantics_dim = state_dict["proj_fusion.0.weight"].shape[1] - config["hidden_size"]
    return {"input_size": grid_size * 2 * config["patch_size"], **config, "semantics_dim": semantics_dim}
