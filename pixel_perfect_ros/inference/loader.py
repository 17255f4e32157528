"""One loader from model files to a ready model, used by depth_node, ppd-bag-eval and the command lines.

It fills in the bundled model (image or video) when no files are named, resolves backend ``auto`` for the
device, refuses a CUDA device without CUDA (never a silent CPU run) and names the model for status and logs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from . import bundled
from .backends import BackendOptions
from .backends.base import default_backend
from .checkpoints import CheckpointError, download_instructions, video_download_instructions
from .pipeline import PixelPerfectDepth
from .preprocess import DEFAULT_TARGET_AREA
from .video_pipeline import PixelPerfectVideoDepth

BUNDLED_WARNING = ("no checkpoint set: using the bundled tiny model trained on synthetic rooms (not for real "
                   "cameras: give the official checkpoint and semantics files)")
BUNDLED_VIDEO_WARNING = ("no checkpoint set: using the bundled tiny video model trained on synthetic rooms (not for "
                         "real cameras: give the official ppvd.pth and Pi3 model.safetensors files)")


@dataclass(frozen=True)
class ModelRequest:
    """What to load and how to run it.

    Attributes:
        checkpoint: PPD ``ppd.pth`` / ``ppd_moge.pth``, or PPVD ``ppvd.pth`` when ``video``; '' together
            with ``semantics`` '' = the bundled model (the video one when ``video``).
        semantics: the encoder file: ``depth_anything_v2_vitl.pth`` (da2), MoGe-2 ``model.pt`` (moge2), or
            Pi3 ``model.safetensors`` when ``video``.
        semantics_type: "da2" | "moge2" (image).
        metric_checkpoint: MoGe-2 ``model.pt`` for metric references; '' = the semantics file when it is an
            official MoGe-2 model (one shared encoder pass), else none.
        video: PPVD (windows of frames) instead of PPD.
        device: torch device name ("cpu", "cuda", "cuda:1", ...).
        dtype: "fp32" | "fp16" | "bf16".
        steps: Euler steps.
        seed: initial-noise seed; None = fresh noise per call.
        target_area: processing area, px; None = the model's own (official 1024*768, bundled 128*96);
            image only (PPVD runs at its DiT's square input size).
        backend: "auto" (``default_backend`` of the device) or a name of ``backends.BACKENDS`` (image; PPVD
            runs torch).
        backend_options: settings of the compiled backends.
    """

    checkpoint: str = ""
    semantics: str = ""
    semantics_type: str = "da2"
    metric_checkpoint: str = ""
    video: bool = False
    device: str = "cpu"
    dtype: str = "fp32"
    steps: int = 4
    seed: int | None = 0
    target_area: int | None = None
    backend: str = "auto"
    backend_options: BackendOptions = field(default_factory=BackendOptions)

    @property
    def bundled(self) -> bool:
        """Whether the request names no files (the bundled model of its mode)."""
        return not self.checkpoint and not self.semantics


@dataclass(frozen=True)
class LoadedModel:
    """A ready model and what the caller reports about it.

    Attributes:
        model: PPD or PPVD on the requested device.
        request: the request as loaded (the bundled model's files and area filled in).
        name: the model's name in status, diagnostics and reports: ``'ppd.pth + moge2.pt (moge2)'`` (file
            names and semantics type, ``pi3`` for video), prefixed ``'bundled '`` for the bundled model.
        backend_requested: the backend asked for, ``'auto (torch)'`` when auto chose it.
        warnings: what the caller should log (the bundled model in use, a backend fallback).
    """

    model: PixelPerfectDepth | PixelPerfectVideoDepth
    request: ModelRequest
    name: str
    backend_requested: str
    warnings: tuple[str, ...] = ()

    @property
    def backend(self) -> str:
        """The backend running the model now (PPVD: torch); read it per status, it can fall back to torch
        during the run."""
        return "torch" if self.request.video else self.model.backend.name

    @property
    def backend_fallback(self) -> str:
        """'' or why the running backend is not the one asked for, or runs reduced; live, as ``backend``."""
        return "" if self.request.video else self.model.backend_fallback


def torch_device(name: str) -> torch.device:
    """The torch device ``name``.

    Raises:
        ValueError: for a CUDA device when torch has no CUDA (never silently the CPU) or not that many CUDA
            devices, or a bad name.
    """
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available to torch")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_backend(request: ModelRequest) -> str:
    """The backend name the request runs: ``auto`` resolved for its device; torch for PPVD."""
    if request.video:
        return "torch"
    return default_backend(torch.device(request.device)) if request.backend == "auto" else request.backend


def model_name(request: ModelRequest) -> str:
    """``LoadedModel.name`` of a request (after the bundled files are filled in)."""
    semantics_type = "pi3" if request.video else request.semantics_type
    name = f"{Path(request.checkpoint).name} + {Path(request.semantics).name} ({semantics_type})"
    return f"bundled {name}" if Path(request.checkpoint) in (bundled.CHECKPOINT, bundled.VIDEO_CHECKPOINT) else name


def model_files(request: ModelRequest) -> ModelRequest:
    """The request with its files checked; when it names none, the bundled model's files filled in: in image
    mode with its encoder type and (when unset) area, in video mode the bundled video model's.

    Raises:
        CheckpointError: one of checkpoint and semantics without the other, the bundled video model not
            installed, or a file that does not exist (each with the download instructions).
    """
    if request.video and request.bundled:
        return _bundled_video(request)
    instructions = video_download_instructions if request.video else download_instructions
    if bool(request.checkpoint) != bool(request.semantics):
        raise CheckpointError("set both 'checkpoint' and 'semantics', or neither for the bundled model.\n"
                              + instructions())
    if request.bundled:
        return replace(request, checkpoint=str(bundled.CHECKPOINT), semantics=str(bundled.SEMANTICS),
                       semantics_type=bundled.SEMANTICS_TYPE, target_area=request.target_area or bundled.TARGET_AREA)
    missing = [Path(name) for name in (request.checkpoint, request.semantics, request.metric_checkpoint)
               if name and not Path(name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint not found: {', '.join(map(str, missing))}\n"
                              f"{instructions(missing[0].parent)}")
    return request


def _bundled_video(request: ModelRequest) -> ModelRequest:
    """``request`` with the bundled video model's files; CheckpointError naming those missing."""
    missing = [str(path) for path in (bundled.VIDEO_CHECKPOINT, bundled.VIDEO_SEMANTICS) if not path.is_file()]
    if missing:
        raise CheckpointError(f"no checkpoint set and the bundled video model is not installed (missing: "
                              f"{', '.join(missing)}): give the checkpoint (ppvd.pth) and the semantics file (Pi3 "
                              f"model.safetensors).\n{video_download_instructions()}")
    return replace(request, checkpoint=str(bundled.VIDEO_CHECKPOINT), semantics=str(bundled.VIDEO_SEMANTICS))


def load_model(request: ModelRequest, log: Callable[[str], None] | None = None) -> LoadedModel:
    """Load the request's model onto its device.

    Args:
        log: receives the image model's backend notes during the run (a rebuild for another input size,
            a fallback to torch); default: the pipeline module's logger at WARNING level.

    Raises:
        CheckpointError: as ``model_files``, or for unreadable or wrong files.
        ValueError: for a CUDA device without CUDA, or a bad dtype.
    """
    device = torch_device(request.device)
    warnings = ((BUNDLED_VIDEO_WARNING if request.video else BUNDLED_WARNING),) if request.bundled else ()
    request = model_files(request)
    if request.video:
        return _load_video(request, device, warnings)
    # The official MoGe-2 model.pt also gives metric depth; the bundled file is an encoder only.
    shared = request.semantics if request.semantics_type == "moge2" and not warnings else ""
    backend = resolve_backend(request)
    model = PixelPerfectDepth.from_checkpoints(
        request.checkpoint, request.semantics, request.semantics_type,
        metric_checkpoint=request.metric_checkpoint or shared or None, steps=request.steps,
        target_area=request.target_area or DEFAULT_TARGET_AREA, device=device, dtype=request.dtype,
        seed=request.seed, backend=backend, backend_options=request.backend_options, log=log)
    if model.backend_fallback:
        warnings += (model.backend_fallback,)
    requested = f"auto ({backend})" if request.backend == "auto" else backend
    return LoadedModel(model, replace(request, target_area=model.target_area), model_name(request), requested,
                       warnings)


def _load_video(request: ModelRequest, device: torch.device, warnings: tuple[str, ...]) -> LoadedModel:
    try:
        model = PixelPerfectVideoDepth.from_checkpoints(request.checkpoint, request.semantics, steps=request.steps,
                                                        device=device, dtype=request.dtype, seed=request.seed)
    except CheckpointError as error:
        raise CheckpointError(f"{error}\n{video_download_instructions()}") from error
    requested = "auto (torch)" if request.backend == "auto" else request.backend
    return LoadedModel(model, request, model_name(request), requested, warnings)
