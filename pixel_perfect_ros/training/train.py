"""Training of the tiny bundled model on 2 CPU cores (``tools/train.py`` is its ``ppd-train`` command line).

1. :func:`train_baseline`: a small ViT encoder + conv head regressing normalised log-depth (masked L1 +
   multi-scale gradient loss), Depth Anything style.
2. :func:`train_ppd`: a tiny PPD ``DiT`` (the full model's class, smaller width / depth / heads) on the
   frozen baseline encoder's semantics, with the official recipe (PPD_SPEC 6): logit-normal integer
   timesteps, ``x_t = (1 - t/T) x_0 + (t/T) eps``, masked velocity MSE against ``eps - x_0``, AdamW
   (lr 1e-4, no weight decay, no schedule), adaLN-Zero init; the fine-tune stage (the last
   ``finetune_steps``) adds ``0.2 *`` the 4-scale gradient loss on ``x0_hat = x_t - (t/T) v_pred``.
   Unlike the official two stages, both run at the data's resolution.

Files (official formats, loaded by ``load_ppd_dit`` / ``load_semantics_encoder(path, "moge2")``):
``ppd.pth`` (``dit.*``), ``moge2.pt`` (``{'model_config': {'encoder': ...}, 'model': encoder.*}``; an
encoder-only MoGe-2 file, so ``load_moge2_model`` cannot read it), ``baseline.pth`` (the whole baseline,
``{'config', 'model'}``) and ``train.json``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.dit import DiT
from ..model.semantics import MoGe2Semantics
from .baseline import BaselineConfig, DepthBaseline, EncoderConfig, HeadConfig
from .losses import (interpolate, masked_l1, masked_mse, multi_scale_gradient_loss, predicted_x0,
                     sample_timesteps)
from .targets import X0_OFFSET, flow_target, normalised_log_depth

PPD_FILE = "ppd.pth"
SEMANTICS_FILE = "moge2.pt"
BASELINE_FILE = "baseline.pth"
REPORT_FILE = "train.json"
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
"""Storage precisions of the written checkpoints (the loaders cast to float32)."""


# ------------------------------------------------------------------------------------------------
# Configs and logging
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaselineTrainConfig:
    """Baseline training.

    model: architecture. steps / batch_size: optimiser steps and images per step. lr, weight_decay:
    AdamW. grad_loss_weight / grad_scales: weight and scale count of the multi-scale gradient loss
    added to the masked L1 on ``n`` (MiDaS uses 0.5 and 4).
    """

    model: BaselineConfig = field(default_factory=BaselineConfig)
    steps: int = 1500
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_loss_weight: float = 0.5
    grad_scales: int = 4


@dataclass(frozen=True)
class PPDTrainConfig:
    """Tiny PPD training (official recipe, PPD_SPEC 6).

    hidden_size, depth, num_heads, mlp_ratio: ``DiT`` size (official 1024, 24, 16, 4; bundled 256, 4, 4
        (head width 64 as official), 4). The coarse tokens are the only path from the input pixels to
        the output, so ``hidden_size`` must hold a 16 px patch's 256 noise values: at 128 the velocity
        MSE stalls at about 0.52 (the noise cannot pass), at 256 it reaches 0.06 at ``t = T``.
    steps: total optimiser steps; the last ``finetune_steps`` of them add the gradient loss.
    lr, weight_decay: AdamW (official 1e-4, 0; 3e-4 here: a tiny model and a short CPU run).
    grad_loss_weight / grad_scales: official 0.2 and 4.
    """

    hidden_size: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    steps: int = 6000
    finetune_steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_loss_weight: float = 0.2
    grad_scales: int = 4

    def dit_kwargs(self) -> dict:
        """``DiT`` constructor arguments."""
        return dict(hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
                    mlp_ratio=self.mlp_ratio)


@dataclass(frozen=True)
class StepLog:
    """One optimiser step: stage ("baseline" / "ppd" / "ppd_finetune"), 1-based step, total loss,
    loss parts, and seconds since the loop started."""

    stage: str
    step: int
    loss: float
    parts: dict[str, float]
    elapsed_s: float


Callback = Callable[[StepLog], None]


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

def check_dataset(rgb: np.ndarray, depth: np.ndarray) -> None:
    """Validate training arrays.

    Raises:
        ValueError: unless ``rgb`` is (N, H, W, 3) uint8 and ``depth`` (N, H, W) floating with the same
            N, H, W, and H, W positive multiples of 16 (the DiT's patch).
    """
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (N, H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if depth.shape != rgb.shape[:3] or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be (N, H, W) float matching rgb {rgb.shape[:3]}, got {depth.shape} {depth.dtype}")
    height, width = rgb.shape[1:3]
    if rgb.shape[0] < 1 or height < 16 or width < 16 or height % 16 or width % 16:
        raise ValueError(f"need at least one image with H, W multiples of 16, got {rgb.shape[:3]}")


def images_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless index batches: a fresh permutation each epoch; batches never straddle epochs."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - min(batch_size, n) + 1, min(batch_size, n)):
            yield order[start:start + batch_size]


def _build(seed: int, factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with weights from ``seed``, leaving the caller's global RNG untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


# ------------------------------------------------------------------------------------------------
# Baseline
# ------------------------------------------------------------------------------------------------

def baseline_loss(model: DepthBaseline, image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  config: BaselineTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked L1 on normalised log-depth + weighted multi-scale gradient loss.

    Args:
        image: (B, 3, H, W) RGB in [0, 1]. target: (B, 1, H, W) ``n``. mask: (B, 1, H, W) {0, 1}.
    """
    pred = model(image)  # (B, 1, H, W)
    l1 = masked_l1(pred, target, mask)
    grad = multi_scale_gradient_loss(pred, target, mask, config.grad_scales)
    return l1 + config.grad_loss_weight * grad, {"l1": l1.item(), "grad": grad.item()}


def train_baseline(rgb: np.ndarray, depth: np.ndarray, config: BaselineTrainConfig = BaselineTrainConfig(),
                   seed: int = 0, callback: Callback | None = None) -> DepthBaseline:
    """Train the discriminative baseline.

    Args:
        rgb: (N, H, W, 3) uint8 RGB; H, W multiples of 16.
        depth: (N, H, W) float32 metres, NaN = invalid.
        config: architecture and optimisation.
        seed: weight init and batch order; same seed and data give identical weights.
        callback: called with a :class:`StepLog` after every step.

    Returns:
        The trained model in eval mode.
    """
    check_dataset(rgb, depth)
    images = images_to_tensor(rgb)
    n, mask = normalised_log_depth(torch.from_numpy(depth).float())
    targets, masks = n.unsqueeze(1), mask.unsqueeze(1).float()  # (N, 1, H, W)
    model = _build(seed, lambda: DepthBaseline(config.model)).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step, idx in zip(range(1, config.steps + 1), _batches(len(images), config.batch_size, generator)):
        loss, parts = baseline_loss(model, images[idx], targets[idx], masks[idx], config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if callback is not None:
            callback(StepLog("baseline", step, loss.item(), parts, time.perf_counter() - start))
    return model.eval()


# ------------------------------------------------------------------------------------------------
# PPD
# ------------------------------------------------------------------------------------------------

@torch.inference_mode()
def compute_semantics(encoder: nn.Module, images: torch.Tensor, batch_size: int = 16,
                      dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Semantic tokens of every image with the frozen encoder, cached once for the whole run.

    Args:
        encoder: ``forward_semantics((B, 3, H, W) RGB [0, 1]) -> (B, h*w, 1024)``.
        images: (N, 3, H, W) float32 RGB in [0, 1].
        dtype: cache precision (float16 halves memory; the DiT L2-normalises the tokens anyway).

    Returns:
        (N, (H/16)*(W/16), 1024) ``dtype``.
    """
    encoder.eval()
    return torch.cat([encoder.forward_semantics(images[i:i + batch_size]).to(dtype)
                      for i in range(0, len(images), batch_size)])


def ppd_loss(dit: DiT, image: torch.Tensor, semantics: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor,
             generator: torch.Generator, grad_loss_weight: float = 0.0,
             grad_scales: int = 4) -> tuple[torch.Tensor, dict[str, float]]:
    """The official training loss on one batch (PPD_SPEC 6).

    Args:
        image: (B, 3, H, W) RGB in [0, 1]. semantics: (B, h*w, 1024).
        x0: (B, 1, H, W) flow data ``n - 0.5``. mask: (B, 1, H, W) {0, 1}.
        generator: draws the timesteps and the noise, in that order.
        grad_loss_weight: 0 in pre-training, 0.2 when fine-tuning.
    """
    t = sample_timesteps(len(x0), generator)  # (B,) int64 in [0, 1000]
    noise = torch.randn(x0.shape, generator=generator)
    x_t = interpolate(x0, noise, t)
    v_pred = dit(torch.cat([x_t, image - X0_OFFSET], dim=1), semantics.float(), t)  # (B, 1, H, W)
    mse = masked_mse(v_pred, noise - x0, mask)
    parts = {"velocity_mse": mse.item()}
    if grad_loss_weight == 0:
        return mse, parts
    grad = multi_scale_gradient_loss(predicted_x0(x_t, v_pred, t), x0, mask, grad_scales)
    parts["grad"] = grad.item()
    return mse + grad_loss_weight * grad, parts


def train_ppd(rgb: np.ndarray, depth: np.ndarray, semantics_encoder: nn.Module,
              config: PPDTrainConfig = PPDTrainConfig(), seed: int = 0,
              callback: Callback | None = None) -> DiT:
    """Train a tiny PPD DiT on a frozen semantics encoder with the official recipe.

    Args:
        rgb: (N, H, W, 3) uint8 RGB; H, W multiples of 16.
        depth: (N, H, W) float32 metres, NaN = invalid.
        semantics_encoder: frozen encoder giving (B, h*w, 1024) tokens (e.g. the baseline's
            ``semantics``); its tokens are computed once and cached in float16.
        config: DiT size and optimisation; ``finetune_steps`` must not exceed ``steps``.
        seed: DiT init, batch order, timesteps and noise; same seed and data give identical weights.
        callback: called with a :class:`StepLog` after every step.

    Returns:
        The trained ``DiT`` in eval mode.

    Raises:
        ValueError: for bad arrays or ``finetune_steps > steps``.
    """
    check_dataset(rgb, depth)
    if not 0 <= config.finetune_steps <= config.steps:
        raise ValueError(f"finetune_steps {config.finetune_steps} must be in [0, steps={config.steps}]")
    images = images_to_tensor(rgb)
    x0, masks = flow_target(torch.from_numpy(depth).float())  # (N, 1, H, W) each
    semantics_encoder.requires_grad_(False)
    semantics = compute_semantics(semantics_encoder, images)
    dit = _build(seed, lambda: DiT(**config.dit_kwargs())).train()  # adaLN-Zero init in the ctor
    optimiser = torch.optim.AdamW(dit.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    finetune_from = config.steps - config.finetune_steps + 1
    start = time.perf_counter()
    for step, idx in zip(range(1, config.steps + 1), _batches(len(images), config.batch_size, generator)):
        finetune = step >= finetune_from
        loss, parts = ppd_loss(dit, images[idx], semantics[idx], x0[idx], masks[idx], generator,
                               config.grad_loss_weight if finetune else 0.0, config.grad_scales)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if callback is not None:
            stage = "ppd_finetune" if finetune else "ppd"
            callback(StepLog(stage, step, loss.item(), parts, time.perf_counter() - start))
    return dit.eval()


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

def save_ppd_checkpoint(dit: DiT, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
    """Save as an official ``ppd.pth``: a flat dict with ``dit.*`` keys; ``dtype`` is the storage precision."""
    torch.save({f"dit.{k}": v.detach().to(dtype if v.is_floating_point() else v.dtype).clone()
                for k, v in dit.state_dict().items()}, path)


def save_semantics_checkpoint(semantics: MoGe2Semantics, encoder_config: EncoderConfig, path: str | Path,
                              dtype: torch.dtype = torch.float32) -> None:
    """Save as an encoder-only MoGe-2 ``model.pt``: ``{'model_config': {'encoder': ...}, 'model': encoder.*}``.

    Readable by ``load_semantics_encoder(path, "moge2")``; ``dtype`` is the storage precision.
    """
    state = {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).clone()
             for k, v in semantics.state_dict().items()}
    torch.save({"model_config": {"encoder": encoder_config.to_moge2()}, "model": state}, path)


def save_baseline(model: DepthBaseline, path: str | Path) -> None:
    """Save the whole baseline as ``{'config': nested dict, 'model': state_dict}`` (see :func:`load_baseline`)."""
    torch.save({"config": asdict(model.config), "model": model.state_dict()}, path)


def load_baseline(path: str | Path) -> DepthBaseline:
    """Inverse of :func:`save_baseline`; returns the model in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    encoder = EncoderConfig(**{**ckpt["config"]["encoder"],
                               "intermediate_layers": tuple(ckpt["config"]["encoder"]["intermediate_layers"])})
    head = HeadConfig(channels=tuple(ckpt["config"]["head"]["channels"]))
    model = DepthBaseline(BaselineConfig(encoder=encoder, head=head))
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval()


def round_weights_(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Round floating parameters and buffers through ``dtype`` in place, so training downstream sees
    exactly the weights that a checkpoint stored in ``dtype`` will load."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype).float())
    return module
