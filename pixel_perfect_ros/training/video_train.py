"""Training of the tiny bundled PPVD on synthetic clips (``ppd-train --video`` is its command line).

1. A narrow Pi3 (``video_semantics.py``), multi-view objective, then frozen and rounded to the storage dtype.
2. A ``VideoDiT`` (24 blocks as official, narrow) with the PPD recipe on windows (PPD_SPEC 3, 6): one
   logit-normal integer timestep and one noise draw per window (the frames of a window share the timestep
   at inference), ``x_t = (1 - t/T) x_0 + (t/T) eps``, masked velocity MSE, AdamW, adaLN-Zero init; the
   last ``finetune_steps`` add ``0.2 x`` the multi-scale gradient loss on ``x0_hat``. The depth target is
   normalised per window (one pair of log-depth quantiles over all its frames), so the frames of a window
   share one scale and shift, as ``align_video_depth`` assumes. Windows mix first windows and
   [3 references + new frames] (``video_data.sample_window``); the RGTP reference tokens are the DiT's
   own (frames 0..2 of every window).

Both stages resume from ``<out>/{pi3,ppvd}_state.pt``; logs are ``<out>/{pi3,ppvd}_log.jsonl``. The
written files are the official formats: ``pi3.safetensors`` and ``ppvd.pth`` (``dit_video.*``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..inference.bundled import SEMANTICS as BUNDLED_MOGE2

from ..model.dit_video import VideoDiT
from ..model.pi3 import Pi3Semantics
from .losses import interpolate, masked_mse, multi_scale_gradient_loss, predicted_x0, sample_timesteps
from .resumable import LoopConfig, load_best, run_resumable
from .targets import X0_OFFSET, flow_target
from .train import _build, round_weights_
from .video_data import ClipSet, load_clip_set, sample_window
from .video_semantics import (PI3_FILE, Pi3TrainConfig, Pi3WithHead, parameter_groups, pi3_from_moge2,
                              save_pi3, window_shift_invariant_l1)

PPVD_FILE = "ppvd.pth"
VIDEO_REPORT_FILE = "train_video.json"
VALIDATION_SEEDS = range(990, 1000)
"""Clips of the validation number: inside the training range 0..999 (seeds >= 1000 are the held-out
benchmark's), never trained on (``VideoRun.clips`` must stay below 990)."""
VALIDATION_TIMESTEPS = (200, 500, 800)
"""Fixed timesteps of the DiT's validation number (mean velocity MSE over them)."""


@dataclass(frozen=True)
class VideoDiTTrainConfig:
    """Narrow ``VideoDiT`` and its training.

    input_size: square frame side, px (the windows are resized to it as ``to_network_input`` does).
    hidden_size / num_heads / mlp_ratio: block size (official 1024, 16, 4); depth is fixed at 24. The
        coarse tokens are the only path from the input to the output and must carry a 16 px patch's 256
        noise values (``PPDTrainConfig``), so ``hidden_size`` is at least 256.
    tie_adaln: one adaLN weight matrix for all 27 blocks (biases per block; the condition is only the
        timestep): the file stores it once (``save_ppvd``), 10 M parameters less at 256 wide.
    steps / finetune_steps: optimiser steps, the last ``finetune_steps`` with the gradient loss.
    windows_per_step / max_frames: windows per step, each of 4..``max_frames`` frames.
    validation_windows: fixed held-out windows of the validation number.
    lr: AdamW (official 1e-4, no weight decay).
    """

    input_size: int = 64
    hidden_size: int = 256
    num_heads: int = 4
    mlp_ratio: float = 0.5
    tie_adaln: bool = True
    steps: int = 3000
    finetune_steps: int = 500
    windows_per_step: int = 1
    max_frames: int = 6
    validation_windows: int = 8
    lr: float = 3e-4
    grad_loss_weight: float = 0.2
    grad_scales: int = 4

    def build(self, semantics_dim: int) -> VideoDiT:
        """A fresh ``VideoDiT`` of this size (adaLN weights tied if ``tie_adaln``)."""
        dit = VideoDiT(input_size=self.input_size, hidden_size=self.hidden_size, num_heads=self.num_heads,
                       mlp_ratio=self.mlp_ratio, semantics_dim=semantics_dim)
        return tie_adaln_weights_(dit) if self.tie_adaln else dit


def tie_adaln_weights_(dit: VideoDiT) -> VideoDiT:
    """Make every block's (and temporal block's) adaLN weight one shared parameter, block 0's; returns ``dit``."""
    shared = dit.blocks[0].adaLN_modulation[1].weight
    for block in [*dit.blocks[1:], *dit.temporal_blocks]:
        block.adaLN_modulation[1].weight = shared
    return dit


Window = tuple[int, list[int]]
"""(clip index, frame indices) of one window."""


def draw_windows(clips: ClipSet, count: int, max_frames: int, generator: torch.Generator) -> list[Window]:
    """``count`` random windows of 4..``max_frames`` frames from random clips."""
    n_clips, n_frames = clips.images.shape[:2]
    windows = []
    for _ in range(count):
        clip = int(torch.randint(n_clips, (1,), generator=generator))
        length = int(torch.randint(4, max_frames + 1, (1,), generator=generator))
        windows.append((clip, sample_window(n_frames, length, generator)))
    return windows


def window_flow_target(depth_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``flow_target`` with one normalisation for all frames of a window.

    Args:
        depth_m: (F, S, S) metres, NaN = invalid.
    Returns:
        x0 (F, 1, S, S) in [-1, 0.5] and mask (F, 1, S, S) {0, 1}.
    """
    frames, height, width = depth_m.shape
    x0, mask = flow_target(depth_m.reshape(1, frames * height, width))  # quantiles over the window
    return x0.reshape(frames, 1, height, width), mask.reshape(frames, 1, height, width)


def video_flow_loss(dit: VideoDiT, images: torch.Tensor, semantics: torch.Tensor, x0: torch.Tensor,
                    mask: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor,
                    grad_loss_weight: float = 0.0, grad_scales: int = 4) -> tuple[torch.Tensor, dict[str, float]]:
    """The PPD loss (PPD_SPEC 6) on one window at one shared timestep.

    Args:
        images: (F, 3, S, S) [0, 1]. semantics: (F, (S/16)^2, semantics_dim).
        x0: (F, 1, S, S) window-normalised flow data. mask: (F, 1, S, S) {0, 1}.
        timestep: 0-d int64 in [0, 1000]. noise: (F, 1, S, S).
    """
    t = timestep.expand(len(x0))  # (F,)
    x_t = interpolate(x0, noise, t)
    v_pred = dit(torch.cat([x_t, images - X0_OFFSET], dim=1), semantics, timestep)
    mse = masked_mse(v_pred, noise - x0, mask)
    parts = {"velocity_mse": mse.item()}
    if grad_loss_weight == 0:
        return mse, parts
    grad = multi_scale_gradient_loss(predicted_x0(x_t, v_pred, t), x0, mask, grad_scales)
    parts["grad"] = grad.item()
    return mse + grad_loss_weight * grad, parts


def _mean_over(windows: list[Window], loss: Callable[[Window], tuple[torch.Tensor, dict]]):
    losses, parts = zip(*(loss(w) for w in windows))
    return torch.stack(losses).mean(), {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}


def train_pi3(clips: ClipSet, validation: ClipSet, moge2_path: Path, out: Path, config: Pi3TrainConfig,
              loop: LoopConfig, seed: int = 0) -> Pi3Semantics:
    """Stage 1: train (or resume) the narrow Pi3 and return its best validated weights, in eval mode."""
    model = _build(seed, lambda: Pi3WithHead(pi3_from_moge2(moge2_path, config)))
    optimiser = torch.optim.AdamW(parameter_groups(model, config), weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    val_windows = draw_windows(validation, config.validation_windows, config.max_frames,
                               torch.Generator().manual_seed(seed + 1000))

    def loss(clip_set: ClipSet, window: Window):
        clip, frames = window
        value = window_shift_invariant_l1(model(clip_set.images[clip, frames]), clip_set.depth[clip, frames])
        return value, {"log_l1": value.item()}

    def step(_: int):
        windows = draw_windows(clips, config.windows_per_step, config.max_frames, generator)
        return _mean_over(windows, lambda w: loss(clips, w))

    def validate() -> float:
        return _mean_over(val_windows, lambda w: loss(validation, w))[0].item()

    run_resumable("pi3", out, model, optimiser, generator, step, validate, config.steps, loop)
    return load_best(model, out, "pi3").pi3.eval()


def train_video_dit(clips: ClipSet, validation: ClipSet, pi3: Pi3Semantics, out: Path,
                    config: VideoDiTTrainConfig, loop: LoopConfig, seed: int = 0) -> VideoDiT:
    """Stage 2: train (or resume) the ``VideoDiT`` on the frozen ``pi3``; returns the best validated one."""
    pi3 = pi3.eval().requires_grad_(False)
    dit = _build(seed, lambda: config.build(pi3.out_dim))
    optimiser = torch.optim.AdamW(dit.parameters(), lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed + 1)
    val_generator = torch.Generator().manual_seed(seed + 2000)
    val_windows = draw_windows(validation, config.validation_windows, config.max_frames, val_generator)
    val_noise = [torch.randn(len(frames), 1, config.input_size, config.input_size, generator=val_generator)
                 for _, frames in val_windows]
    finetune_from = config.steps - config.finetune_steps + 1

    def loss(clip_set: ClipSet, window: Window, timestep, noise, grad_weight: float):
        clip, frames = window
        images = clip_set.images[clip, frames]
        with torch.no_grad():
            semantics = pi3.forward_semantics(images)
        x0, mask = window_flow_target(clip_set.depth[clip, frames])
        return video_flow_loss(dit, images, semantics, x0, mask, timestep, noise, grad_weight, config.grad_scales)

    def step(index: int):
        grad_weight = config.grad_loss_weight if index >= finetune_from else 0.0
        windows = draw_windows(clips, config.windows_per_step, config.max_frames, generator)

        def one(window: Window):
            timestep = sample_timesteps(1, generator)[0]
            noise = torch.randn(len(window[1]), 1, config.input_size, config.input_size, generator=generator)
            return loss(clips, window, timestep, noise, grad_weight)
        return _mean_over(windows, one)

    def validate() -> float:
        values = [loss(validation, w, torch.tensor(t), noise, 0.0)[0].item()
                  for w, noise in zip(val_windows, val_noise) for t in VALIDATION_TIMESTEPS]
        return sum(values) / len(values)

    run_resumable("ppvd", out, dit, optimiser, generator, step, validate, config.steps, loop)
    return load_best(dit, out, "ppvd").eval()


def save_ppvd(dit: VideoDiT, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
    """Save as an official ``ppvd.pth``: a flat dict with ``dit_video.*`` keys in ``dtype``.

    Tied tensors stay one tensor under several keys, so ``torch.save`` stores them once.
    """
    stored: dict[int, torch.Tensor] = {}  # data_ptr -> converted tensor

    def convert(v: torch.Tensor) -> torch.Tensor:
        if v.data_ptr() not in stored:
            stored[v.data_ptr()] = v.detach().to(dtype if v.is_floating_point() else v.dtype).clone()
        return stored[v.data_ptr()]
    torch.save({f"dit_video.{k}": convert(v) for k, v in dit.state_dict().items()}, path)


def train_video(clips: ClipSet, validation: ClipSet, moge2_path: Path, out: Path, pi3_config: Pi3TrainConfig,
                dit_config: VideoDiTTrainConfig, pi3_loop: LoopConfig, dit_loop: LoopConfig, seed: int = 0,
                dtype: torch.dtype = torch.float16) -> tuple[Pi3Semantics, VideoDiT]:
    """Both stages; writes ``pi3.safetensors`` after stage 1 and ``ppvd.pth`` after stage 2 (``dtype``).

    The DiT trains on the Pi3 rounded to ``dtype``, i.e. on exactly the shipped semantics.
    """
    out = Path(out)
    pi3 = round_weights_(train_pi3(clips, validation, moge2_path, out, pi3_config, pi3_loop, seed), dtype)
    save_pi3(pi3, out / PI3_FILE, dtype)
    dit = train_video_dit(clips, validation, pi3, out, dit_config, dit_loop, seed)
    save_ppvd(dit, out / PPVD_FILE, dtype)
    return pi3, dit


@dataclass(frozen=True)
class VideoRun:
    """One ``ppd-train --video`` run: data, sizes, schedule and where everything goes.

    out: state, logs, best weights and the written files. cache: rendered clips (npz).
    clips: training clips, seeds 0..clips-1 (< 990). clip_frames, height, width: rendering.
    moge2: the image model's encoder that initialises Pi3's.
    """

    out: Path
    cache: Path
    clips: int
    clip_frames: int = 24
    height: int = 96
    width: int = 128
    seed: int = 0
    dtype: torch.dtype = torch.float16
    pi3: Pi3TrainConfig = field(default_factory=Pi3TrainConfig)
    dit: VideoDiTTrainConfig = field(default_factory=VideoDiTTrainConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    moge2: Path = BUNDLED_MOGE2

    def __post_init__(self):
        if self.clips > VALIDATION_SEEDS.start:
            raise ValueError(f"at most {VALIDATION_SEEDS.start} training clips (seeds {VALIDATION_SEEDS.start}.."
                             f"{VALIDATION_SEEDS.stop - 1} validate), got {self.clips}")


def _last_record(out: Path, name: str) -> dict | None:
    path = out / f"{name}_log.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]) if lines else None


def _report(run: VideoRun, pi3: Pi3Semantics, dit: VideoDiT) -> dict:
    best = {name: torch.load(run.out / f"{name}_best.pt", weights_only=True)
            for name in ("pi3", "ppvd")}
    return {
        "run": {k: v for k, v in asdict(run).items() if k not in ("pi3", "dit", "loop")},
        "pi3": {"config": asdict(run.pi3), "parameters": sum(p.numel() for p in pi3.parameters()),
                "best_step": best["pi3"]["step"], "best_val_log_l1": best["pi3"]["val"],
                "last": _last_record(run.out, "pi3")},
        "ppvd": {"config": asdict(run.dit), "parameters": sum(p.numel() for p in dit.parameters()),
                 "best_step": best["ppvd"]["step"], "best_val_velocity_mse": best["ppvd"]["val"],
                 "last": _last_record(run.out, "ppvd")},
        "files": [PI3_FILE, PPVD_FILE],
    }


def run_video_training(run: VideoRun) -> dict:
    """Render / read the clips, run (or resume) both stages, write the files; returns the report."""
    def clip_set(seeds):
        return load_clip_set(run.cache, seeds, run.clip_frames, run.height, run.width, run.dit.input_size)

    start = time.perf_counter()
    clips, validation = clip_set(range(run.clips)), clip_set(VALIDATION_SEEDS)
    data_s = time.perf_counter() - start
    pi3, dit = train_video(clips, validation, run.moge2, run.out, run.pi3, run.dit, run.loop, run.loop,
                           run.seed, run.dtype)
    report = _report(run, pi3, dit)
    report.update(clips_loaded=len(clips.images), data_s=round(data_s, 1),
                  wall_s=round(time.perf_counter() - start, 1))
    return report


def export_best(run: VideoRun) -> dict:
    """Write ``pi3.safetensors`` and ``ppvd.pth`` from the best validated weights so far (training may go on)."""
    pi3 = load_best(Pi3WithHead(pi3_from_moge2(run.moge2, run.pi3)), run.out, "pi3").pi3.eval()
    pi3 = round_weights_(pi3, run.dtype)
    dit = load_best(run.dit.build(pi3.out_dim), run.out, "ppvd").eval()
    save_pi3(pi3, run.out / PI3_FILE, run.dtype)
    save_ppvd(dit, run.out / PPVD_FILE, run.dtype)
    return _report(run, pi3, dit)
