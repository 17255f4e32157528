"""``onnxruntime``: the exported ONNX graphs (``onnx_export``: encoder, one DiT step) in ONNX Runtime.

Execution providers: on a CUDA device TensorRT and CUDA (whichever this onnxruntime build has, TensorRT
first), on the CPU the CPU provider. fp32 runs the float32 graphs anywhere; fp16 runs the fp16 graphs and
needs a CUDA execution provider (ORT's CPU fp16 kernels exist but are slower than fp32); bf16 is not
offered (no bf16 graph is exported). Tensors cross as numpy arrays (a host round trip per call, also on
CUDA: no IO binding yet). The Euler loop is ``pipeline.sample_depth`` with the session in place of the DiT.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..sampling import sample_depth
from .base import Backend, BackendOptions, BackendUnavailable

ONNX_OPSET = 18
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_LOG = logging.getLogger(__name__)


def import_onnxruntime():
    """The ``onnxruntime`` module; BackendUnavailable saying what to install when it is missing."""
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime (CPU) or "
                                 f"onnxruntime-gpu (CUDA) ({error})") from error
    return onnxruntime


def choose_providers(available: list[str], device: torch.device, dtype: str) -> list[str]:
    """Execution providers, in priority order, for ``device`` and ``dtype``.

    Raises:
        BackendUnavailable: bf16; a CUDA device without a CUDA / TensorRT provider; fp16 without one.
    """
    if dtype == "bf16":
        raise BackendUnavailable("no bf16 ONNX graph is exported: use dtype fp16 (CUDA) or fp32")
    if device.type == "cuda":
        gpu = [p for p in GPU_PROVIDERS if p in available]
        if not gpu:
            raise BackendUnavailable(f"the device is {device} but this onnxruntime has no CUDA execution provider "
                                     f"(it has {', '.join(available)}): pip install onnxruntime-gpu")
        return gpu
    if device.type != "cpu":
        raise BackendUnavailable(f"onnxruntime runs on cpu or cuda devices, the device is {device}")
    if dtype != "fp32":
        raise BackendUnavailable(f"{dtype} ONNX graphs need a CUDA execution provider (the device is cpu): "
                                 "use dtype fp32 on the CPU, or a cuda device with onnxruntime-gpu")
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime sessions of the exported encoder and DiT step (see the module docstring).

    Args (beyond ``Backend``'s):
        log: receives the export progress lines; default: this module's logger at INFO level.

    Raises (from the constructor): BackendUnavailable when onnxruntime is missing or lacks the
    execution provider that the device and dtype need.
    """

    name = "onnxruntime"

    def __init__(self, dit: nn.Module, encoder: nn.Module, device: torch.device, dtype: str,
                 options: BackendOptions = BackendOptions(), log: Callable[[str], None] | None = None):
        super().__init__(dit, encoder, device, dtype, options)
        ort = import_onnxruntime()
        self.providers = choose_providers(ort.get_available_providers(), self.device, dtype)
        from .. import onnx_export  # torch.onnx and onnx load only for this backend

        self.graphs = onnx_export.exported_graphs(
            dit, encoder, options.folder, dtype=dtype, opset=ONNX_OPSET, max_height=options.max_height,
            max_width=options.max_width, force=options.force_engine_update, log=log or _LOG.info)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = torch.get_num_threads()
        provider_options = [{"device_id": self.device.index or 0} if p != "CPUExecutionProvider" else {}
                            for p in self.providers]
        self.encoder_session, self.dit_session = (
            ort.InferenceSession(str(path), session_options, providers=self.providers,
                                 provider_options=provider_options)
            for path in self.graphs)

    def _to_numpy(self, tensor: torch.Tensor, dtype=np.float32) -> np.ndarray:
        return np.ascontiguousarray(tensor.detach().to("cpu").numpy().astype(dtype, copy=False))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        (semantics,) = self.encoder_session.run(None, {"image": self._to_numpy(image.float())})
        return self._to_device(semantics)  # (N, h*w, 1024) float32

    def dit_step(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The DiT's call signature on the session: x (N, 4, H, W), semantics (N, h*w, 1024), timestep
        0-d or (N,) -> velocity (N, 1, H, W) float32 on the device."""
        timestep = timestep.reshape(-1).expand(x.shape[0])  # the graph takes one timestep per image
        (velocity,) = self.dit_session.run(None, {
            "x": self._to_numpy(x.float()), "semantics": self._to_numpy(semantics.float()),
            "timestep": self._to_numpy(timestep, np.int32)})
        return self._to_device(velocity)

    def sample(self, image, semantics, noise, timesteps):
        return sample_depth(self.dit_step, image.float(), semantics, noise, timesteps)
