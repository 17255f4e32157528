"""``onnxruntime``: the exported ONNX graphs (``onnx_export``: encoder, one DiT step) in ONNX Runtime.

Execution providers: on a CUDA device TensorRT and CUDA (whichever this onnxruntime build has, TensorRT
first), on the CPU the CPU provider. fp32 runs the float32 graphs anywhere; fp16 runs the fp16 graphs and
needs a CUDA execution provider (ORT's CPU fp16 kernels exist but are slower than fp32); bf16 is not
offered (no bf16 graph is exported). Tensors cross as numpy arrays (a host round trip per call, also on
CUDA: no IO binding yet). The Euler loop is ``pipeline.sample_depth`` with the session in place of the DiT.

Provider options (``provider_options``): ``device_id`` of the torch device for the CUDA and TensorRT
providers; the TensorRT provider caches its engines and timing cache in ``<engine folder>/ort_trt_cache``
and builds them for the explicit shape profile of the native TensorRT backend (``profiles.profile_shapes``),
fp16 when the dtype is. A provider asked for may not start (libraries missing): the sessions then run on
what did (``providers``), ``degraded`` says what is missing, and a CUDA device left with no GPU provider
at all is refused (``BackendUnavailable``: the caller falls back to torch).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..sampling import sample_depth
from .base import Backend, BackendOptions, BackendUnavailable
from .engine_cache import ShapeProfile, make_cache_folder
from .profiles import GRAPHS, graph_input_shapes, profile_refusal, profile_shapes

ONNX_OPSET = 18
TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider")
GPU_PROVIDERS = (TENSORRT_PROVIDER, CUDA_PROVIDER)
ORT_TRT_CACHE = "ort_trt_cache"
"""Folder, in ``BackendOptions.folder``, of the TensorRT provider's engine and timing caches."""
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
    return [CPU_PROVIDER]


def trt_profile_options(profile: ShapeProfile) -> dict[str, str]:
    """The TensorRT provider's ``trt_profile_min/opt/max_shapes`` for ``profile``: every input of both
    graphs as "name:dim1xdim2...", comma-separated (each session uses the names of its own inputs)."""
    inputs = {name: shapes for graph in GRAPHS for name, shapes in graph_input_shapes(graph, profile).items()}
    return {f"trt_profile_{which}_shapes": ",".join(f"{name}:{'x'.join(map(str, shapes[index]))}"
                                                    for name, shapes in inputs.items())
            for index, which in enumerate(("min", "opt", "max"))}


def provider_options(providers: list[str], device: torch.device, dtype: str,
                     options: BackendOptions) -> list[dict]:
    """The options of each provider of ``providers`` (same order) for ``InferenceSession``.

    CUDA and TensorRT: ``device_id`` of ``device`` (index, 0 when none). TensorRT also: engine and timing
    caches in ``options.folder / ORT_TRT_CACHE`` (the caller creates it), the explicit shape profile
    ``profile_shapes(options)``, fp16 for dtype fp16. CPU: none.

    Raises:
        ValueError: for a TensorRT provider with an invalid shape range in ``options``.
    """
    device_id = {"device_id": torch.device(device).index or 0}
    result = []
    for provider in providers:
        if provider == TENSORRT_PROVIDER:
            cache = str(options.folder / ORT_TRT_CACHE)
            result.append({**device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                           "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                           "trt_fp16_enable": dtype == "fp16", **trt_profile_options(profile_shapes(options))})
        elif provider == CUDA_PROVIDER:
            result.append(dict(device_id))
        else:
            result.append({})
    return result


def started_providers(requested: list[str], running: dict[str, list[str]]) -> tuple[list[str], str]:
    """What runs, given the providers ``requested`` and each session's ``get_providers()`` (graph -> list).

    Returns:
        (the providers in use, in order, over all sessions; '' or a one-line note naming the requested
        GPU providers that did not start and what runs instead).

    Raises:
        BackendUnavailable: when GPU providers were requested and a session runs none of them.
    """
    gpu_requested = [p for p in requested if p in GPU_PROVIDERS]
    for graph, in_use in running.items():
        if gpu_requested and not set(gpu_requested) & set(in_use):
            raise BackendUnavailable(f"onnxruntime was asked for {', '.join(requested)} but the {graph} session "
                                     f"runs {', '.join(in_use)}: the GPU providers did not start")
    in_use_anywhere = list(dict.fromkeys(p for in_use in running.values() for p in in_use))
    missing = {graph: [p for p in gpu_requested if p not in in_use] for graph, in_use in running.items()}
    if not any(missing.values()):
        return in_use_anywhere, ""

    def note(missed: list[str], in_use: list[str]) -> str:
        return f"{', '.join(missed)} did not start; running {', '.join(p for p in in_use if p in GPU_PROVIDERS)}"

    sessions = list(running.items())
    if all(in_use == sessions[0][1] for _, in_use in sessions):
        return in_use_anywhere, note(missing[sessions[0][0]], sessions[0][1])
    return in_use_anywhere, "; ".join(f"{graph}: {note(missing[graph], in_use)}" for graph, in_use in sessions
                                      if missing[graph])


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime sessions of the exported encoder and DiT step (see the module docstring).

    Args (beyond ``Backend``'s):
        log: receives the export progress lines; default: this module's logger at INFO level.

    Attributes (beyond ``Backend``'s):
        providers: the execution providers in use (``InferenceSession.get_providers``, both sessions).
        session_providers: graph ("encoder" | "dit_step") -> that session's providers.
        profile: the TensorRT provider's shape profile (``profiles.profile_shapes``).
        exported_range: the (N, H, W) range the exported graphs take.
        max_batch: the largest N the sessions take: the TensorRT provider's profile batch when it runs,
            else the exported graphs' maximum (``onnx_export.MAX_BATCH``).

    Raises (from the constructor): BackendUnavailable when onnxruntime is missing, lacks the execution
    provider that the device and dtype need, or its GPU providers do not start.
    """

    name = "onnxruntime"

    def __init__(self, dit: nn.Module, encoder: nn.Module, device: torch.device, dtype: str,
                 options: BackendOptions = BackendOptions(), log: Callable[[str], None] | None = None):
        super().__init__(dit, encoder, device, dtype, options)
        ort = import_onnxruntime()
        requested = choose_providers(ort.get_available_providers(), self.device, dtype)
        from .. import onnx_export  # torch.onnx and onnx load only for this backend

        self.profile = profile_shapes(options)
        low, top = (onnx_export.MIN_SIZE_PX,) * 2, (options.max_height, options.max_width)
        self.exported_range = ShapeProfile((1, *low), (1, *top), (onnx_export.MAX_BATCH, *top))
        self.graphs = onnx_export.exported_graphs(
            dit, encoder, options.folder, dtype=dtype, opset=ONNX_OPSET, max_height=options.max_height,
            max_width=options.max_width, force=options.force_engine_update, log=log or _LOG.info)
        if TENSORRT_PROVIDER in requested:
            make_cache_folder(options.folder / ORT_TRT_CACHE)
        per_provider = provider_options(requested, self.device, dtype, options)
        sessions = {graph: self._session(ort, path, requested, per_provider)
                    for graph, path in zip(GRAPHS, self.graphs)}
        self.encoder_session, self.dit_session = sessions["encoder"], sessions["dit_step"]
        self.session_providers = {graph: list(session.get_providers()) for graph, session in sessions.items()}
        self.providers, self.degraded = started_providers(requested, self.session_providers)
        self.max_batch = (self.profile if TENSORRT_PROVIDER in self.providers else self.exported_range).max[0]

    @staticmethod
    def _session(ort, path: Path, providers: list[str], options: list[dict]):
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(str(path), session_options, providers=providers, provider_options=options)

    def shape_refusal(self, n: int, height: int, width: int) -> str | None:
        """Why the sessions cannot take an (n, 3, height, width) input (the TensorRT provider's profile
        when it runs, else the exported graphs' range), or None."""
        if TENSORRT_PROVIDER in self.providers:
            return profile_refusal(self.profile, n, height, width, "ONNX Runtime TensorRT engines")
        return profile_refusal(self.exported_range, n, height, width, "exported ONNX graphs")

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
