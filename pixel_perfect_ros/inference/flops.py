"""Analytic FLOP counts of the PPD models and the dense peaks of the devices they run on.

Counted from the architecture (module attributes or constructor kwargs, never from weights: a model
built on the ``meta`` device works), 1 multiply-add = 2 FLOP, batch 1.

Counted per transformer block on L tokens of width D (MLP hidden width r D, r = mlp_ratio, 4 here):
  - linear layers: 2 L (3 D^2 + D^2 + 2 r D^2) FLOP (qkv, proj, fc1, fc2) = 24 L D^2 at r = 4;
  - attention: 4 L^2 D FLOP (Q K^T and P V, all heads).
Also counted: the patch embeddings (a matmul per patch), the DiT's semantics fusion MLP (on the coarse
tokens), its final layer, and MoGe-2's 1x1 output projections. Not counted (each < 0.1 % at
1024x768): softmax, LayerNorms, GELU/SiLU, RoPE, adaLN and timestep MLPs (one token), the residual
adds, resizes and the Euler update.

For the official architecture (DiT D = 1024, 24 blocks; DA2 ViT-L) this gives the figures of
``notes/acceleration.md``: one DiT forward 12.79 TFLOP at 1024x768 (7.42 TFLOP of it attention in the
fine stage; 62 % of it attention in all), ViT-L 2.79 TFLOP at 896x672 (3073 tokens), 53.9 TFLOP per
image at 4 steps, 10.8 TFLOP at 512x512.
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model.dinov2 import DINOV2_ARCHITECTURES, DinoVisionTransformer
from ..model.dit import SEMANTICS_DIM

DIT_DEFAULTS = dict(in_channels=4, out_channels=1, hidden_size=1024, depth=24, num_heads=16, patch_size=8,
                    mlp_ratio=4.0)
"""``DiT()``'s constructor defaults: the official PPD architecture."""
SEMANTICS_PATCH_PX = 16
"""Image pixels per semantics token (the DiT's coarse patch); the ViT sees one 14-px patch per token."""


def block_flops(tokens: int, dim: int, mlp_ratio: float = 4.0) -> tuple[int, int]:
    """(linear, attention) FLOP of one transformer block on ``tokens`` tokens of width ``dim``."""
    hidden = int(dim * mlp_ratio)
    linear = 2 * tokens * (4 * dim * dim + 2 * dim * hidden)  # qkv 3D^2 + proj D^2 + fc1/fc2 2 r D^2
    attention = 4 * tokens * tokens * dim  # Q K^T and P V
    return linear, attention


# ------------------------------------------------------------------------------------------------
# DiT
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiTFlops:
    """FLOP of one DiT forward (one Euler step), by part.

    Attributes:
        coarse_linear, coarse_attention: blocks on the (H/16)(W/16) coarse tokens.
        fine_linear, fine_attention: blocks on the (H/8)(W/8) fine tokens (Cas-DiT's second half).
        other: patch embedding, semantics fusion MLP and final layer.
    """

    coarse_linear: int
    coarse_attention: int
    fine_linear: int
    fine_attention: int
    other: int

    @property
    def total(self) -> int:
        return self.coarse_linear + self.coarse_attention + self.fine_linear + self.fine_attention + self.other

    @property
    def attention(self) -> int:
        return self.coarse_attention + self.fine_attention


def _dit_config(dit: nn.Module | Mapping) -> dict:
    """DiT constructor kwargs from a ``DiT`` module or a (partial) kwargs mapping."""
    if isinstance(dit, Mapping):
        unknown = set(dit) - set(DIT_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown DiT config keys {sorted(unknown)}; expected some of {sorted(DIT_DEFAULTS)}")
        return {**DIT_DEFAULTS, **dit}
    fc1 = dit.blocks[0].mlp.fc1
    return dict(in_channels=dit.in_channels, out_channels=dit.out_channels, hidden_size=dit.hidden_size,
                depth=len(dit.blocks), num_heads=dit.num_heads, patch_size=dit.patch_size,
                mlp_ratio=fc1.out_features / fc1.in_features)


def dit_forward_parts(dit: nn.Module | Mapping, height: int, width: int) -> DiTFlops:
    """FLOP of one DiT forward at a ``height`` x ``width`` processing size, by part.

    Args:
        dit: a ``DiT`` (any device, ``meta`` included) or its constructor kwargs (missing keys: defaults).
        height, width: processing size, px, multiples of 2 * patch_size (16).

    Raises:
        ValueError: for sizes that are not multiples of the coarse patch, or unknown config keys.
    """
    cfg = _dit_config(dit)
    p, dim, depth = cfg["patch_size"], cfg["hidden_size"], cfg["depth"]
    if height <= 0 or width <= 0 or height % (2 * p) or width % (2 * p):
        raise ValueError(f"height and width must be positive multiples of {2 * p} px, got {height}x{width}")
    coarse = (height // (2 * p)) * (width // (2 * p))
    fine = 4 * coarse
    n_coarse = depth // 2  # blocks[0 : depth//2] before the split, as DiT.split_after
    c_lin, c_att = block_flops(coarse, dim, cfg["mlp_ratio"])
    f_lin, f_att = block_flops(fine, dim, cfg["mlp_ratio"])
    patch_embed = 2 * coarse * cfg["in_channels"] * (2 * p) ** 2 * dim
    fusion = 2 * coarse * ((dim + SEMANTICS_DIM) * 4 * dim + 2 * (4 * dim) ** 2)
    final = 2 * fine * dim * p * p * cfg["out_channels"]
    return DiTFlops(n_coarse * c_lin, n_coarse * c_att, (depth - n_coarse) * f_lin, (depth - n_coarse) * f_att,
                    patch_embed + fusion + final)


def dit_forward_flops(dit: nn.Module | Mapping, height: int, width: int) -> int:
    """FLOP of one DiT forward (one Euler step) at ``height`` x ``width`` px (see ``dit_forward_parts``)."""
    return dit_forward_parts(dit, height, width).total


# ------------------------------------------------------------------------------------------------
# Semantics encoder
# ------------------------------------------------------------------------------------------------

def _vit_config(vit: nn.Module | Mapping | str) -> dict:
    """embed_dim, depth, mlp_ratio, patch_size, num_register_tokens of a DINOv2 backbone or its config/name."""
    if isinstance(vit, str):
        if vit not in DINOV2_ARCHITECTURES:
            raise ValueError(f"unknown DINOv2 backbone {vit!r}; known: {sorted(DINOV2_ARCHITECTURES)}")
        vit = DINOV2_ARCHITECTURES[vit]
    if isinstance(vit, Mapping):
        return dict(embed_dim=vit["embed_dim"], depth=vit["depth"], mlp_ratio=vit.get("mlp_ratio", 4.0),
                    patch_size=vit.get("patch_size", 14), num_register_tokens=vit.get("num_register_tokens", 0))
    if not isinstance(vit, DinoVisionTransformer):
        raise TypeError(f"expected a DinoVisionTransformer, its config or name, got {type(vit).__name__}")
    fc1 = vit.blocks[0].mlp.fc1
    return dict(embed_dim=vit.embed_dim, depth=vit.depth, mlp_ratio=fc1.out_features / fc1.in_features,
                patch_size=vit.patch_size, num_register_tokens=vit.num_register_tokens)


def vit_flops(vit: nn.Module | Mapping | str, rows: int, cols: int, blocks: int | None = None) -> int:
    """FLOP of a DINOv2 ViT forward on a ``rows`` x ``cols`` patch grid (+ CLS and register tokens).

    Args:
        vit: a ``DinoVisionTransformer``, its constructor kwargs, or a ``DINOV2_ARCHITECTURES`` name.
        rows, cols: patch grid (the image is rows*14 x cols*14 px).
        blocks: blocks run (MoGe-2 stops after its last intermediate layer); None = all.

    Example: ``vit_flops("dinov2_vitl14", 48, 64)`` = 2.79e12 (896x672 px, 3073 tokens).
    """
    cfg = _vit_config(vit)
    dim, p = cfg["embed_dim"], cfg["patch_size"]
    tokens = rows * cols + 1 + cfg["num_register_tokens"]
    linear, attention = block_flops(tokens, dim, cfg["mlp_ratio"])
    n_blocks = cfg["depth"] if blocks is None else blocks
    return 2 * rows * cols * 3 * p * p * dim + n_blocks * (linear + attention)


def semantics_flops(encoder: nn.Module, height: int, width: int) -> int:
    """FLOP of PPD's semantics encoder for one ``height`` x ``width`` image (one 14-px ViT patch per
    16-px DiT token).

    Args:
        encoder: ``DepthAnythingV2Semantics`` (``pretrained``: all blocks) or ``MoGe2Semantics`` (blocks up
            to its last intermediate layer, plus its 1x1 output projections).
    """
    rows, cols = height // SEMANTICS_PATCH_PX, width // SEMANTICS_PATCH_PX
    if hasattr(encoder, "pretrained"):  # Depth Anything v2
        return vit_flops(encoder.pretrained, rows, cols)
    if hasattr(encoder, "encoder"):  # MoGe-2
        moge = encoder.encoder
        blocks = moge.layer_indices[-1] + 1
        projections = 2 * rows * cols * moge.backbone.embed_dim * moge.dim_out * len(moge.layer_indices)
        return vit_flops(moge.backbone, rows, cols, blocks) + projections
    raise TypeError(f"unknown semantics encoder {type(encoder).__name__}")


def ppd_image_flops(dit: nn.Module | Mapping, encoder: nn.Module | str, height: int, width: int, steps: int) -> int:
    """FLOP of one PPD image: the semantics encoder once plus ``steps`` DiT forwards.

    Args:
        encoder: a semantics encoder module (see ``semantics_flops``) or a DINOv2 name (DA2-style, all blocks).
    """
    if isinstance(encoder, str):
        sem = vit_flops(encoder, height // SEMANTICS_PATCH_PX, width // SEMANTICS_PATCH_PX)
    else:
        sem = semantics_flops(encoder, height, width)
    return sem + steps * dit_forward_flops(dit, height, width)


# ------------------------------------------------------------------------------------------------
# Device peaks
# ------------------------------------------------------------------------------------------------

DEVICE_PEAKS: dict[str, dict[str, float | None]] = {
    # Dense (no sparsity) tensor-core peaks, TFLOP/s, from NVIDIA's datasheets. "fp32": plain FP32 on
    # the CUDA cores (what torch uses for float32 matmuls at its default "highest" precision);
    # "tf32": TF32 tensor cores (float32 matmuls at precision "high"/"medium").
    "H100 SXM": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.7, "fp32": 66.9},  # same GH100 die and clocks as H100 SXM
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},  # fp16 with fp32 accumulation
    # Jetson: NVIDIA publishes INT8 TOPS only; these are the estimates of notes/acceleration.md.
    "AGX Orin": {"bf16": 42.5, "fp16": 42.5, "tf32": None, "fp32": None},  # 64 GB, MAXN
    "Orin Nano": {"bf16": 17.0, "fp16": 17.0, "tf32": None, "fp32": None},  # 8 GB, MAXN SUPER (~10 at 15 W)
}
"""Dense peak TFLOP/s by device and precision (None: not listed). Jetson fp16 figures are estimates."""

_NAME_PATTERNS = (  # (regex on torch.cuda.get_device_name, DEVICE_PEAKS key); first match wins
    (r"H100.*PCIe", "H100 PCIe"),
    (r"H100", "H100 SXM"),
    (r"H200", "H200"),
    (r"A100", "A100"),
    (r"RTX 4090", "RTX 4090"),
)
ORIN_NANO_MAX_SMS = 8
"""Jetson Orins all report the name "Orin": 8 SMs or fewer is an Orin Nano/NX-class GPU, more an AGX Orin."""


@dataclass(frozen=True)
class Peak:
    """The peak a configuration's ideal time is computed against.

    Attributes:
        tflops: TFLOP/s, or None when unknown (no ideal time then).
        label: where it comes from, e.g. "H100 SXM bf16 datasheet" or "measured fp32 matmul 2048^3".
    """

    tflops: float | None
    label: str


def peak_key(device_name: str, sm_count: int | None = None) -> str | None:
    """The ``DEVICE_PEAKS`` key of a CUDA device name (``torch.cuda.get_device_name``), or None."""
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, device_name):
            return key
    if "Orin" in device_name:
        return "Orin Nano" if sm_count is not None and sm_count <= ORIN_NANO_MAX_SMS else "AGX Orin"
    return None


def table_peak(device_name: str, dtype: str, sm_count: int | None = None) -> Peak:
    """The datasheet peak of a CUDA device for ``dtype`` ("fp32" | "fp16" | "bf16").

    fp32 maps to TF32 when torch's float32 matmul precision is not "highest" (then matmuls use TF32),
    else to plain FP32.
    """
    key = peak_key(device_name, sm_count)
    if key is None:
        return Peak(None, f"no datasheet peak for {device_name!r}")
    precision = dtype
    if dtype == "fp32" and torch.get_float32_matmul_precision() != "highest":
        precision = "tf32"
    tflops = DEVICE_PEAKS[key].get(precision)
    return Peak(tflops, f"{key} {precision} datasheet" if tflops else f"no {precision} peak listed for {key}")


def measure_matmul_tflops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048,
                          repeats: int = 5) -> float:
    """Best-of-``repeats`` TFLOP/s of a ``size`` x ``size`` square matmul on ``device`` (after one warm-up)."""
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    best = float("inf")
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        F.linear(a, b)  # a @ b.T: on a CPU, linear takes oneDNN's bf16/fp16 kernels where torch.mm does not
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first run is the warm-up
            best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e12


def device_peak(device: torch.device | str, dtype: str, matmul_size: int = 2048) -> Peak:
    """Peak of ``device`` for ``dtype``: the datasheet value on a known CUDA GPU; on a CPU (or an
    unknown GPU) the best rate of a ``matmul_size``^2 matmul (``F.linear``) in that dtype measured now,
    labelled "measured"; it is what this process gets, not a datasheet figure."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        peak = table_peak(props.name, dtype, props.multi_processor_count)
        if peak.tflops is not None:
            return peak
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    tflops = measure_matmul_tflops(device, torch_dtype, matmul_size)
    return Peak(tflops, f"measured {dtype} matmul {matmul_size}^3 on {device.type}")
