"""What runs a PPD model's semantics encoder and DiT sampling loop: one interface, several backends.

Every backend computes the same two functions as the torch modules it is made from:

    encode(image)                              (N, 3, H, W) float32 RGB in [0, 1] -> (N, (H/16)*(W/16), 1024)
    sample(image, semantics, noise, timesteps) -> (N, 1, H, W) float32 normalised log-depth
        noise: (N, 1, H, W) float32 initial latent; timesteps: ``flow.sampling_timesteps(steps)``

Tensors come in and go out on the backend's ``device``. The torch modules stay the source of truth
(exported graphs and engines are made from them). ``fallback.create_backend`` starts a backend by name:
``torch`` with the reason when the requested one does not start here, else the requested one wrapped
in a ``fallback.FallbackBackend`` (rebuilt for an input outside its shape range, replaced by ``torch``
for the rest of the run when it fails on a frame).
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..sampling import check_dtype

BACKENDS = ("torch", "torch_cuda_graph", "onnxruntime", "tensorrt")
_CLASSES = {
    "torch": ("torch_backend", "TorchBackend"),
    "torch_cuda_graph": ("cuda_graph", "CudaGraphBackend"),
    "onnxruntime": ("onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("tensorrt_backend", "TensorRTBackend"),
}

_DEFAULT_BACKENDS = {"cuda": "torch_cuda_graph", "cpu": "torch"}
"""Device type -> the backend that "auto" picks (others: torch)."""


def default_backend(device: torch.device) -> str:
    """The backend the node and CLIs run for backend "auto" on ``device``."""
    return _DEFAULT_BACKENDS.get(torch.device(device).type, "torch")


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (package missing, no CUDA, dtype unsupported, ...); the message says why."""


@dataclass(frozen=True)
class BackendOptions:
    """Settings of the compiled backends (Isaac ROS names where they exist).

    Attributes:
        engine_file_path: folder of the exported ONNX graphs and built engines ('' = ~/.cache/pixel_perfect_ros).
        force_engine_update: export and build again even when cached files match.
        max_height, max_width: largest processing size the dynamic shapes must cover, px (multiples of 16).
        opt_height, opt_width: the size the engines are tuned for, px (0: the max); ``profiles.options_covering``
            sets it to the size the node expects to run most.
    """

    engine_file_path: str = ""
    force_engine_update: bool = False
    max_height: int = 768
    max_width: int = 1024
    opt_height: int = 0
    opt_width: int = 0

    @property
    def folder(self) -> Path:
        """``engine_file_path``, or ~/.cache/pixel_perfect_ros when empty, with ~ expanded."""
        return Path(self.engine_file_path or "~/.cache/pixel_perfect_ros").expanduser()


class Backend(ABC):
    """Runs ``encode`` and ``sample`` (see the module docstring) for one model on one device.

    Args:
        dit: the PPD ``DiT``, on ``device``, eval mode.
        encoder: the semantics encoder (``forward_semantics``), on ``device``, eval mode.
        device: torch device of the tensors taken and returned.
        dtype: "fp32" | "fp16" | "bf16".
        options: settings of compiled backends.

    Raises (from the constructor): BackendUnavailable when it cannot run here.
    """

    name: str
    degraded: str = ""
    """'' or why this backend runs in a reduced form (e.g. an ONNX Runtime provider that did not start)."""
    fallback: str = ""
    """'' or why ``torch`` runs in place of this backend since a failure during the run
    (``fallback.FallbackBackend``)."""
    max_batch: int | None = None
    """Largest N that ``sample`` (and ``encode``) take, None for any: the image pipeline runs several
    depth samples of one image in chunks of at most this many, so that a backend whose engines are built
    for batch 1 is never asked for more (and never falls back to torch for it)."""

    def __init__(self, dit: nn.Module, encoder: nn.Module, device: torch.device, dtype: str,
                 options: BackendOptions = BackendOptions()):
        check_dtype(dtype)
        self.dit, self.encoder, self.device, self.dtype, self.options = dit, encoder, torch.device(device), dtype, options

    def shape_refusal(self, n: int, height: int, width: int) -> str | None:
        """Why this backend cannot take an (n, 3, height, width) input (outside its engines' shape
        range), or None when it can. Torch backends take any size."""
        return None

    @abstractmethod
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 RGB in [0, 1] -> (N, (H/16)*(W/16), 1024) semantic tokens."""

    @abstractmethod
    def sample(self, image: torch.Tensor, semantics: torch.Tensor, noise: torch.Tensor,
               timesteps: list[int]) -> torch.Tensor:
        """Euler loop from ``noise`` (N, 1, H, W) float32 to (N, 1, H, W) float32 normalised log-depth."""


def check_backend_name(name: str) -> None:
    """ValueError naming the choices when ``name`` is not one of ``BACKENDS``."""
    if name not in _CLASSES:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name`` (its module imported now: optional packages load only when asked).

    Raises:
        ValueError: for a name not in ``BACKENDS``.
    """
    check_backend_name(name)
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def error_summary(error: BaseException, first_line: bool = False) -> str:
    """``Type: message`` of an exception (the type alone for an empty message), for fallback reasons;
    with ``first_line``, only the message's first line (a table cell)."""
    text = str(error).splitlines()[0] if first_line and str(error) else str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
